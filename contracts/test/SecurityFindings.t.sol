// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {Test} from "forge-std/Test.sol";
import {SibylFeed} from "../src/SibylFeed.sol";
import {SibylAggregatorV3} from "../src/SibylAggregatorV3.sol";
import {FrostSigner} from "./utils/FrostSigner.sol";
import {ReportBuilder} from "./utils/ReportBuilder.sol";

/// One test per finding of issue 16's review. Each one exercises the behaviour the old
/// contracts had (noted per test) and asserts the fixed one.
contract SecurityFindingsTest is Test {
    using ReportBuilder for SibylFeed.Leaf[];

    uint256 internal constant NOW_S = 1_764_000_000;
    uint64 internal constant NOW_MS = uint64(NOW_S) * 1000;
    bytes32 internal constant CONFIG = keccak256("committee file v1");

    SibylFeed internal feed;
    FrostSigner.Key internal committee;
    uint256 internal nonce = 11;
    bytes32[] internal noFeeds;
    uint8[] internal noDecimals;

    function setUp() public {
        vm.warp(NOW_S);
        committee = FrostSigner.key(0xC0FFEE);
        feed = deploy();
    }

    function deploy() internal returns (SibylFeed) {
        bytes32[] memory ids = new bytes32[](3);
        uint8[] memory ds = new uint8[](3);
        for (uint256 i = 0; i < 3; i++) {
            (ids[i], ds[i]) = (id(i), 8);
        }
        return new SibylFeed(CONFIG, committee.x, committee.y, 5_000, ids, ds);
    }

    function id(uint256 i) internal pure returns (bytes32) {
        return bytes32(uint256(bytes32("F-0")) + (i << 232));
    }

    function three(int256 price) internal pure returns (SibylFeed.Leaf[] memory ls) {
        ls = new SibylFeed.Leaf[](3);
        for (uint256 i = 0; i < 3; i++) {
            ls[i].feedId = id(i);
            ls[i].price = price + int256(i);
            ls[i].confidence = 10;
        }
    }

    function header(SibylFeed.Leaf[] memory ls, uint64 round, uint64 ts)
        internal
        view
        returns (SibylFeed.ReportHeader memory)
    {
        return SibylFeed.ReportHeader(2, feedConfig(), round, ts, ls.root(), bytes32(0));
    }

    function feedConfig() internal view returns (bytes32 d) {
        (d,,) = feed.committee();
    }

    function sign(FrostSigner.Key memory k, SibylFeed.ReportHeader memory h)
        internal
        returns (SibylFeed.Signature memory)
    {
        return ReportBuilder.sign(k, nonce++, ReportBuilder.digest(h));
    }

    function roundOf(bytes32 f) internal view returns (uint80 r) {
        (, r) = feed.feedInfo(f);
    }

    /// Medium, griefing the push path: anyone copies one leaf of a pending push and lands it
    /// first with submitFeeds. Old: the push reverted StaleReport as a whole. Now the copied
    /// leaf is skipped and the other feeds land.
    function test_copiedLeafLandedFirstDoesNotVoidThePush() public {
        SibylFeed.Leaf[] memory ls = three(100e8);
        SibylFeed.ReportHeader memory h = header(ls, 1, NOW_MS);
        SibylFeed.Signature memory s = sign(committee, h);
        SibylFeed.Leaf[] memory one = new SibylFeed.Leaf[](1);
        one[0] = ls[1];
        bytes32[][] memory proof = new bytes32[][](1);
        proof[0] = ls.proof(1);
        vm.prank(address(0xBAD));
        feed.submitFeeds(h, s, one, proof);
        vm.expectEmit(address(feed));
        emit SibylFeed.FeedSkipped(ls[1].feedId, 1);
        feed.submitReport(SibylFeed.ReportMeta(2, h.configDigest, 1, NOW_MS, bytes32(0)), s, ls);
        for (uint256 i = 0; i < 3; i++) {
            assertEq(roundOf(ls[i].feedId), 1, "every feed landed once");
        }
    }

    function rotationMessage(SibylFeed f, bytes32 to, FrostSigner.Key memory next)
        internal
        view
        returns (bytes32)
    {
        (bytes32 from,,) = f.committee();
        return f.rotationDigest(
            block.chainid,
            address(f),
            f.rotationCount(),
            from,
            to,
            next.x,
            next.y,
            noFeeds,
            noDecimals
        );
    }

    /// Medium, rotation to a key nobody holds: old: accepted (only an on-curve check) and
    /// permanent. Now the new key must sign the same message.
    function test_rotationToAKeyNobodyHoldsIsRefused() public {
        // a point nobody knows the secret of is modelled by a key whose holder does not sign
        FrostSigner.Key memory nobody = FrostSigner.key(0xDEAD);
        bytes32 m = rotationMessage(feed, keccak256("v2"), nobody);
        SibylFeed.Signature memory byCommittee = ReportBuilder.sign(committee, 1, m);
        // the committee's own signature offered as the proof: not the new key's
        vm.expectRevert(SibylFeed.NewKeyNotProven.selector);
        feed.rotateCommittee(
            keccak256("v2"), nobody.x, nobody.y, noFeeds, noDecimals, byCommittee, byCommittee
        );
        (, uint256 x,) = feed.committee();
        assertEq(x, committee.x);
    }

    /// Low, rotation messages bound no chain, contract or counter: a hand-over signed for one
    /// deployment could be relayed to another at the same config digest, and after A->B->A
    /// anyone could replay A->B. Now neither applies.
    function test_rotationCannotBeRelayedOrReplayed() public {
        SibylFeed staging = deploy();
        FrostSigner.Key memory b = FrostSigner.key(0xB0B);
        bytes32 m = rotationMessage(staging, keccak256("B"), b);
        SibylFeed.Signature memory sa = ReportBuilder.sign(committee, 2, m);
        SibylFeed.Signature memory sb = ReportBuilder.sign(b, 3, m);
        staging.rotateCommittee(keccak256("B"), b.x, b.y, noFeeds, noDecimals, sa, sb);
        // relayed to production (same committee, same digest): refused
        vm.expectRevert(SibylFeed.InvalidSignature.selector);
        feed.rotateCommittee(keccak256("B"), b.x, b.y, noFeeds, noDecimals, sa, sb);
        // B hands back to A on staging; then the old A->B message is replayed there
        bytes32 back = rotationMessage(staging, CONFIG, committee);
        staging.rotateCommittee(
            CONFIG,
            committee.x,
            committee.y,
            noFeeds,
            noDecimals,
            ReportBuilder.sign(b, 4, back),
            ReportBuilder.sign(committee, 5, back)
        );
        vm.expectRevert(SibylFeed.InvalidSignature.selector);
        staging.rotateCommittee(keccak256("B"), b.x, b.y, noFeeds, noDecimals, sa, sb);
        assertEq(staging.rotationCount(), 2);
    }

    /// Low, round and timestamp not monotonic together: old: landing round r+1 and then an
    /// earlier round with a later timestamp lowered the round id consumers saw. Now the round
    /// id is the feed's own counter and only grows; a report not newer than the stored one is
    /// skipped; members refuse to sign a timestamp not later than the previous report's
    /// (aggregator round tests).
    function test_roundIdsNeverGoBackwards() public {
        SibylFeed.Leaf[] memory ls = three(100e8);
        SibylAggregatorV3 agg = new SibylAggregatorV3(feed, ls[0].feedId, "F-0");
        SibylFeed.ReportHeader memory later = header(ls, 11, NOW_MS - 1_000);
        feed.submitReport(
            SibylFeed.ReportMeta(2, later.configDigest, 11, later.timestampMs, bytes32(0)),
            sign(committee, later),
            ls
        );
        (uint80 r1,,,,) = agg.latestRoundData();
        ls[0].price = 90e8;
        SibylFeed.ReportHeader memory earlier = header(ls, 10, NOW_MS - 2_000);
        feed.submitReport(
            SibylFeed.ReportMeta(2, earlier.configDigest, 10, earlier.timestampMs, bytes32(0)),
            sign(committee, earlier),
            ls
        );
        (uint80 r2, int256 answer,,,) = agg.latestRoundData();
        assertEq(r2, r1, "an older report changed the feed");
        assertEq(answer, 100e8);
        // a later report goes on from there
        SibylFeed.ReportHeader memory next = header(ls, 12, NOW_MS);
        feed.submitReport(
            SibylFeed.ReportMeta(2, next.configDigest, 12, next.timestampMs, bytes32(0)),
            sign(committee, next),
            ls
        );
        (uint80 r3,,,,) = agg.latestRoundData();
        assertEq(r3, r1 + 1);
    }

    /// Low, one out-of-range leaf voided the whole report. Now it alone is skipped.
    function test_outOfRangeLeafDoesNotVoidTheReport() public {
        SibylFeed.Leaf[] memory ls = three(100e8);
        ls[2].confidence = uint256(type(uint72).max) + 1; // 18-decimal feed, confidence > 4,722
        SibylFeed.ReportHeader memory h = header(ls, 1, NOW_MS);
        vm.expectEmit(address(feed));
        emit SibylFeed.FeedSkipped(ls[2].feedId, 2);
        feed.submitReport(
            SibylFeed.ReportMeta(2, h.configDigest, 1, NOW_MS, bytes32(0)), sign(committee, h), ls
        );
        assertEq(roundOf(ls[0].feedId), 1);
        assertEq(roundOf(ls[1].feedId), 1);
        assertEq(roundOf(ls[2].feedId), 0);
    }

    /// Low, decimals were a free constructor argument of the adapter. Now the adapter reads
    /// the feed registry, and no rotation can change a registered feed's decimals.
    function test_adapterDecimalsComeFromTheRegistryAndNeverChange() public {
        SibylAggregatorV3 agg = new SibylAggregatorV3(feed, id(0), "F-0");
        assertEq(agg.decimals(), 8);
        FrostSigner.Key memory b = FrostSigner.key(0xB0B);
        noFeeds.push(id(0));
        noDecimals.push(18);
        bytes32 m = rotationMessage(feed, keccak256("B"), b);
        vm.expectRevert(abi.encodeWithSelector(SibylFeed.DecimalsChanged.selector, id(0), 8, 18));
        feed.rotateCommittee(
            keccak256("B"),
            b.x,
            b.y,
            noFeeds,
            noDecimals,
            ReportBuilder.sign(committee, 6, m),
            ReportBuilder.sign(b, 7, m)
        );
        assertEq(new SibylAggregatorV3(feed, id(0), "F-0 again").decimals(), 8);
    }
}
