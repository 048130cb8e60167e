// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {Test} from "forge-std/Test.sol";
import {SibylFeed} from "../src/SibylFeed.sol";
import {SibylAggregatorV3} from "../src/SibylAggregatorV3.sol";
import {FrostSigner} from "./utils/FrostSigner.sol";
import {ReportBuilder} from "./utils/ReportBuilder.sol";
import {
    PreviousRoundConsumer,
    LegacyConsumer,
    LatestRoundConsumer
} from "./consumers/ChainlinkConsumers.sol";
import {
    AggregatorV3Interface
} from "@chainlink/contracts/src/v0.8/shared/interfaces/AggregatorV3Interface.sol";
import {
    AggregatorInterface
} from "@chainlink/contracts/src/v0.8/shared/interfaces/AggregatorInterface.sol";

/// Chainlink-only consumers against SibylAggregatorV3 fed by signed pushes.
contract ChainlinkConsumersTest is Test {
    using ReportBuilder for SibylFeed.Leaf[];

    uint256 internal constant NOW_S = 1_764_000_000;
    bytes32 internal constant CONFIG = keccak256("committee file v1");
    bytes32 internal constant BTC = "BTC-USD";

    SibylFeed internal feed;
    SibylAggregatorV3 internal agg;
    FrostSigner.Key internal committee;
    uint256 internal nonce = 7;
    uint64 internal round = 1;

    function setUp() public {
        vm.warp(NOW_S);
        committee = FrostSigner.key(0xC0FFEE);
        bytes32[] memory ids = new bytes32[](1);
        uint8[] memory ds = new uint8[](1);
        (ids[0], ds[0]) = (BTC, 8);
        feed = new SibylFeed(CONFIG, committee.x, committee.y, 5_000, ids, ds);
        agg = new SibylAggregatorV3(feed, BTC, "BTC / USD");
    }

    function push(int256 price, uint64 timestampMs) internal {
        SibylFeed.Leaf[] memory ls = new SibylFeed.Leaf[](1);
        ls[0].feedId = BTC;
        ls[0].price = price;
        ls[0].confidence = 1e6;
        SibylFeed.ReportHeader memory h =
            SibylFeed.ReportHeader(2, CONFIG, round++, timestampMs, ls.root(), bytes32(0));
        feed.submitReport(
            SibylFeed.ReportMeta(2, CONFIG, h.round, timestampMs, bytes32(0)),
            ReportBuilder.sign(committee, nonce++, ReportBuilder.digest(h)),
            ls
        );
    }

    function test_previousRoundConsumerConfiguresOnceTwoRoundsExist() public {
        push(97_000e8, uint64(NOW_S) * 1000 - 2_000);
        // only one round: the previous one does not exist (Chainlink reverts the same way)
        vm.expectRevert(bytes("no previous round"));
        new PreviousRoundConsumer(AggregatorV3Interface(address(agg)), 3600, 500);
        push(97_100e8, uint64(NOW_S) * 1000 - 1_000);
        PreviousRoundConsumer c =
            new PreviousRoundConsumer(AggregatorV3Interface(address(agg)), 3600, 500);
        assertEq(c.price(), 97_100e18);
        // later pushes keep it working, each round checked against the one before
        for (uint256 i = 1; i <= 5; i++) {
            vm.warp(NOW_S + i * 60);
            push(97_100e8 + int256(i) * 1e8, uint64(NOW_S + i * 60) * 1000);
            assertEq(c.price(), uint256(97_100e18 + i * 1e18));
        }
        (uint80 roundId,,,,) = agg.latestRoundData();
        assertEq(roundId, 7, "round ids count the pushes");
    }

    function test_legacyConsumerReadsLatestAnswer() public {
        LegacyConsumer c = new LegacyConsumer(AggregatorInterface(address(agg)));
        vm.expectRevert(bytes("no answer"));
        c.price();
        push(97_000e8, uint64(NOW_S) * 1000);
        assertEq(c.price(), 97_000e8);
    }

    function test_latestRoundConsumerNeverSeesAFutureTimestamp() public {
        LatestRoundConsumer c = new LatestRoundConsumer(AggregatorV3Interface(address(agg)));
        // a report 5 s ahead of the block (allowed clock drift) is stored...
        push(97_000e8, uint64(NOW_S) * 1000 + 5_000);
        // ...and the consumer's `block.timestamp - updatedAt` does not underflow
        (int256 answer, uint8 decimals) = c.price(60);
        assertEq(answer, 97_000e8);
        assertEq(decimals, 8);
    }
}
