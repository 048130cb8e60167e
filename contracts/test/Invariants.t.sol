// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {Test} from "forge-std/Test.sol";
import {SibylFeed} from "../src/SibylFeed.sol";
import {SibylAggregatorV3} from "../src/SibylAggregatorV3.sol";
import {FrostSigner} from "./utils/FrostSigner.sol";
import {ReportBuilder} from "./utils/ReportBuilder.sol";

/// Drives the feed with committee-signed reports (any order, any timestamps, duplicates,
/// subsets, out-of-range values), reports signed by a stranger, and time; remembers what the
/// committee signed so the invariants can compare.
contract FeedHandler is Test {
    using ReportBuilder for SibylFeed.Leaf[];

    bytes32 internal constant CONFIG = keccak256("committee file v1");
    SibylFeed public immutable feed;
    FrostSigner.Key internal committee;
    FrostSigner.Key internal stranger;
    uint256 internal nonce = 1;
    bytes32[3] public ids = [bytes32("A-USD"), bytes32("B-USD"), bytes32("C-USD")];

    /// Every (feed, price, confidence, timestampMs) the committee signed: a stored value must be
    /// one of them.
    mapping(bytes32 => bool) public signed;
    uint256 public forgedAccepted;

    constructor(SibylFeed feed_) {
        feed = feed_;
        committee = FrostSigner.key(0xC0FFEE);
        stranger = FrostSigner.key(0xBAD);
    }

    function leafKey(bytes32 id, int256 price, uint256 conf, uint64 ts)
        public
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(id, price, conf, ts));
    }

    function build(uint8 mask, int96 price, uint64 conf, uint64 round)
        internal
        view
        returns (SibylFeed.Leaf[] memory ls)
    {
        mask = mask % 7 + 1; // a non-empty subset of the three feeds
        uint256 n;
        for (uint256 i = 0; i < 3; i++) {
            if (mask & (1 << i) != 0) n++;
        }
        ls = new SibylFeed.Leaf[](n);
        uint256 k;
        for (uint256 i = 0; i < 3; i++) {
            if (mask & (1 << i) == 0) continue;
            ls[k].feedId = ids[i];
            ls[k].price = int256(price) + int256(i);
            ls[k].confidence = uint256(conf) + (round % 3 == 0 ? uint256(type(uint72).max) : 0);
            k++;
        }
    }

    /// A committee-signed report of round `round` at `agoMs` before the block (or up to 5 s
    /// ahead), pushed whole.
    function push(uint8 mask, int96 price, uint64 conf, uint64 round, uint16 agoMs, bool ahead)
        external
    {
        SibylFeed.Leaf[] memory ls = build(mask, price, conf, round);
        uint64 nowMs = uint64(block.timestamp) * 1000;
        uint64 ts = ahead ? nowMs + (agoMs % 5_000) : nowMs - agoMs;
        SibylFeed.ReportHeader memory h =
            SibylFeed.ReportHeader(2, CONFIG, round, ts, ls.root(), bytes32(0));
        for (uint256 i = 0; i < ls.length; i++) {
            signed[leafKey(ls[i].feedId, ls[i].price, ls[i].confidence, ts)] = true;
        }
        feed.submitReport(
            SibylFeed.ReportMeta(2, CONFIG, round, ts, bytes32(0)),
            ReportBuilder.sign(committee, nonce++, ReportBuilder.digest(h)),
            ls
        );
    }

    /// The same report signed by a key that is not the committee's: must change nothing.
    function forge(uint8 mask, int96 price, uint64 conf, uint64 round) external {
        SibylFeed.Leaf[] memory ls = build(mask, price, conf, round);
        uint64 ts = uint64(block.timestamp) * 1000;
        SibylFeed.ReportHeader memory h =
            SibylFeed.ReportHeader(2, CONFIG, round, ts, ls.root(), bytes32(0));
        SibylFeed.Signature memory s =
            ReportBuilder.sign(stranger, nonce++, ReportBuilder.digest(h));
        s.groupKeyX = committee.x;
        try feed.submitReport(SibylFeed.ReportMeta(2, CONFIG, round, ts, bytes32(0)), s, ls) {
            forgedAccepted++;
        } catch {}
    }

    function warp(uint16 secondsAhead) external {
        vm.warp(block.timestamp + secondsAhead % 120);
    }
}

/// forge's invariant runner calls the handler at random; after every call:
///   round ids and stored timestamps never decrease, updatedAt <= block.timestamp,
///   and every stored value is one the committee signed.
contract FeedInvariantTest is Test {
    SibylFeed internal feed;
    FeedHandler internal handler;
    SibylAggregatorV3[3] internal adapters;
    uint256[3] internal lastRound;
    uint256[3] internal lastTs;

    function setUp() public {
        vm.warp(1_764_000_000);
        FrostSigner.Key memory committee = FrostSigner.key(0xC0FFEE);
        bytes32[] memory ids = new bytes32[](3);
        uint8[] memory ds = new uint8[](3);
        (ids[0], ids[1], ids[2]) = (bytes32("A-USD"), bytes32("B-USD"), bytes32("C-USD"));
        (ds[0], ds[1], ds[2]) = (8, 8, 18);
        feed =
            new SibylFeed(keccak256("committee file v1"), committee.x, committee.y, 5_000, ids, ds);
        handler = new FeedHandler(feed);
        for (uint256 i = 0; i < 3; i++) {
            adapters[i] = new SibylAggregatorV3(feed, ids[i], "");
        }
        targetContract(address(handler));
    }

    /// Each call signs a report in Solidity (slow): 32 sequences of 64 calls keep CI at a
    /// few seconds; raise them to explore more.
    /// forge-config: default.invariant.runs = 32
    /// forge-config: default.invariant.depth = 64
    function invariant_roundsTimestampsMonotonicAndSigned() public {
        for (uint256 i = 0; i < 3; i++) {
            bytes32 id = handler.ids(i);
            (, uint80 roundId) = feed.feedInfo(id);
            assertGe(roundId, lastRound[i], "round id decreased");
            if (roundId == 0) continue;
            (int256 price, uint256 conf, uint64 ts, uint64 r) = feed.latestFeed(id);
            assertEq(r, roundId);
            if (roundId > lastRound[i]) assertGt(ts, lastTs[i], "timestamp did not increase");
            else assertEq(ts, lastTs[i], "value changed without a new round id");
            assertTrue(handler.signed(handler.leafKey(id, price, conf, ts)), "unsigned value");
            (lastRound[i], lastTs[i]) = (roundId, ts);
            (,,, uint256 updatedAt,) = adapters[i].latestRoundData();
            assertLe(updatedAt, block.timestamp, "updatedAt after the block");
            if (roundId > 1) {
                (,,, uint256 prevUpdatedAt,) = adapters[i].getRoundData(uint80(roundId - 1));
                assertLe(prevUpdatedAt, updatedAt, "previous round later than the latest");
            }
        }
        assertEq(handler.forgedAccepted(), 0, "a report not signed by the committee landed");
    }
}
