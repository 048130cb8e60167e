// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {Script} from "forge-std/Script.sol";
import {SibylFeed} from "../src/SibylFeed.sol";
import {FrostSigner} from "../test/utils/FrostSigner.sol";
import {ReportBuilder} from "../test/utils/ReportBuilder.sol";

/// Steady-state update transactions on a real node, for their receipts' gasUsed
/// (scripts/test.d/21-contracts-anvil runs it against anvil). Signs with a fixed test group
/// secret, so it is for development chains only.
///   tx 1: deploy SibylFeed          tx 2: ten-feed report (fills ten fresh slots)
///   tx 3: one-feed report           tx 4: ten-feed report           (steady state)
contract GasOnAnvil is Script {
    using ReportBuilder for SibylFeed.Leaf[];

    bytes32 internal constant CONFIG = keccak256("gas-on-anvil committee");
    uint256 internal nonce = 0x9a5;
    uint64 internal round = 1;

    function leaves(uint256 n, int256 bump) internal view returns (SibylFeed.Leaf[] memory ls) {
        ls = new SibylFeed.Leaf[](n);
        for (uint256 i = 0; i < n; i++) {
            ls[i] = SibylFeed.Leaf({
                feedId: ReportBuilder.feedId(string.concat("FEED-", vm.toString(10 + i), "-USD")),
                price: 97_123_45678901 + int256(i) * 1_000_000 + bump,
                confidence: uint256(12_345_678 + bump),
                numObservations: 7,
                observedAtMs: uint64(block.timestamp) * 1000 - 5_000,
                // The quality fields of a live leaf, so the calldata costs what a real push does.
                bid: 97_123_40000000 + int256(i) * 1_000_000 + bump,
                ask: 97_123_50000000 + int256(i) * 1_000_000 + bump,
                venues: 5,
                status: 0,
                flags: 0,
                ema: 97_120_00000000 + int256(i) * 1_000_000,
                emaConfidence: 11_000_000,
                volatility: 450_000_000
            });
        }
    }

    function submit(
        SibylFeed feed,
        FrostSigner.Key memory key,
        SibylFeed.Leaf[] memory ls,
        uint64 ts
    ) internal {
        SibylFeed.ReportHeader memory h = SibylFeed.ReportHeader(
            2, CONFIG, round, ts, ls.root(), bytes32(0)
        );
        SibylFeed.Signature memory s = ReportBuilder.sign(key, nonce++, ReportBuilder.digest(h));
        vm.broadcast();
        feed.submitReport(SibylFeed.ReportMeta(2, CONFIG, round++, ts, bytes32(0)), s, ls);
    }

    function run() external {
        FrostSigner.Key memory key = FrostSigner.key(0xC0FFEE);
        SibylFeed.Leaf[] memory all = leaves(10, 0);
        bytes32[] memory ids = new bytes32[](10);
        uint8[] memory decimals = new uint8[](10);
        for (uint256 i = 0; i < 10; i++) {
            (ids[i], decimals[i]) = (all[i].feedId, 8);
        }
        vm.broadcast();
        SibylFeed feed = new SibylFeed(CONFIG, key.x, key.y, 5_000, ids, decimals);
        uint64 t = uint64(block.timestamp) * 1000 - 4_000;
        submit(feed, key, leaves(10, 0), t);
        SibylFeed.Leaf[] memory one = new SibylFeed.Leaf[](1);
        one[0] = leaves(10, 1)[3];
        submit(feed, key, one, t + 1_000);
        submit(feed, key, leaves(10, 2), t + 2_000);
    }
}
