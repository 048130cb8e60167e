// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {Test, Vm, console} from "forge-std/Test.sol";
import {SibylFeed} from "../src/SibylFeed.sol";
import {SibylAggregatorV3} from "../src/SibylAggregatorV3.sol";
import {FrostSecp256k1} from "../src/FrostSecp256k1.sol";
import {FrostSigner} from "./utils/FrostSigner.sol";
import {ReportBuilder} from "./utils/ReportBuilder.sol";
import {PullConsumer} from "./utils/PullConsumer.sol";
import {SibylPull} from "../src/SibylPull.sol";

/// Reports signed inside the test with a known group secret (a FROST group signature is a
/// Schnorr signature under the group key; frost_kat.json ties our challenge to the Rust crate).
contract SibylFeedTest is Test {
    using ReportBuilder for SibylFeed.Leaf[];

    uint64 internal constant DRIFT_MS = 5_000;
    uint256 internal constant NOW_S = 1_764_000_000;
    uint64 internal constant NOW_MS = uint64(NOW_S) * 1000;

    SibylFeed internal feed;
    FrostSigner.Key internal committee;
    FrostSigner.Key internal stranger;
    bytes32 internal constant CONFIG = keccak256("committee file v1");
    /// The headers here carry a non-zero margin root (a round that ordered margin commands):
    /// the contract does not read it, but every path must have it under the signature.
    bytes32 internal constant MARGIN = keccak256("margin commands of the round");
    /// Where a packed pull payload's leaves start (SibylFeed.PULL_LEAVES_AT).
    uint256 internal constant LEAVES_AT = 209;
    uint256 internal nonceCounter = 0x5eed;

    function setUp() public {
        vm.warp(NOW_S);
        committee = FrostSigner.key(0xC0FFEE);
        stranger = FrostSigner.key(0xBAD);
        (bytes32[] memory ids, uint8[] memory decimals) = registry(256);
        feed = new SibylFeed(CONFIG, committee.x, committee.y, DRIFT_MS, ids, decimals);
    }

    /// The ids `leaves` uses (FEED-100, FEED-101, ...), 8 decimals each.
    function registry(uint256 n) internal pure returns (bytes32[] memory ids, uint8[] memory ds) {
        ids = new bytes32[](n);
        ds = new uint8[](n);
        for (uint256 i = 0; i < n; i++) {
            ids[i] = ReportBuilder.feedId(string.concat("FEED-", vm.toString(100 + i)));
            ds[i] = 8;
        }
    }

    // ------------------------------------------------------------------ helpers

    function leaves(uint256 n, int256 basePrice)
        internal
        pure
        returns (SibylFeed.Leaf[] memory ls)
    {
        ls = new SibylFeed.Leaf[](n);
        for (uint256 i = 0; i < n; i++) {
            // ids in ascending byte order, as the Rust side orders leaves
            ls[i] = SibylFeed.Leaf({
                feedId: ReportBuilder.feedId(string.concat("FEED-", vm.toString(100 + i))),
                price: basePrice + int256(i) * 1e8,
                confidence: 25e6 + i,
                numObservations: 7,
                observedAtMs: NOW_MS - 400,
                bid: 0,
                ask: 0,
                venues: 5,
                status: 0,
                flags: 0,
                ema: 0,
                emaConfidence: 0,
                volatility: 0
            });
        }
    }

    function header(SibylFeed.Leaf[] memory ls, uint64 round, uint64 ts)
        internal
        pure
        returns (SibylFeed.ReportHeader memory)
    {
        return SibylFeed.ReportHeader(2, CONFIG, round, ts, ls.root(), MARGIN);
    }

    function meta(SibylFeed.ReportHeader memory h)
        internal
        pure
        returns (SibylFeed.ReportMeta memory)
    {
        return SibylFeed.ReportMeta(h.version, h.configDigest, h.round, h.timestampMs, h.marginRoot);
    }

    function signWith(FrostSigner.Key memory key, SibylFeed.ReportHeader memory h)
        internal
        returns (SibylFeed.Signature memory)
    {
        return ReportBuilder.sign(key, nonceCounter++, ReportBuilder.digest(h));
    }

    function proofs(SibylFeed.Leaf[] memory all, uint256[] memory idx)
        internal
        pure
        returns (SibylFeed.Leaf[] memory sub, bytes32[][] memory ps)
    {
        sub = new SibylFeed.Leaf[](idx.length);
        ps = new bytes32[][](idx.length);
        for (uint256 i = 0; i < idx.length; i++) {
            sub[i] = all[idx[i]];
            ps[i] = all.proof(idx[i]);
        }
    }

    function assertStored(SibylFeed.Leaf memory l, SibylFeed.ReportHeader memory h) internal view {
        (int256 price, uint256 conf, uint64 ts,) = feed.latestFeed(l.feedId);
        assertEq(price, l.price, "price");
        assertEq(conf, l.confidence, "confidence");
        assertEq(ts, h.timestampMs, "timestamp");
    }

    // ------------------------------------------------------------------ happy paths

    function test_submitReportStoresEveryFeed() public {
        SibylFeed.Leaf[] memory ls = leaves(10, 97_000e8);
        SibylFeed.ReportHeader memory h = header(ls, 42, NOW_MS - 100);
        vm.expectEmit(address(feed));
        uint256 packed = uint256(uint96(int96(ls[0].price))) | (ls[0].confidence << 96)
            | (uint256(NOW_MS - 100) << 168) | (uint256(1) << 216) | (uint256(8 + 1) << 248);
        emit SibylFeed.FeedUpdated(ls[0].feedId, packed);
        feed.submitReport(meta(h), signWith(committee, h), ls);
        for (uint256 i = 0; i < ls.length; i++) {
            assertStored(ls[i], h);
        }
    }

    function test_submitReportOddSizes() public {
        for (uint256 n = 1; n <= 9; n++) {
            SibylFeed.Leaf[] memory ls = leaves(n, 1e8);
            SibylFeed.ReportHeader memory h = header(ls, uint64(n), NOW_MS - 1000 + uint64(n));
            feed.submitReport(meta(h), signWith(committee, h), ls);
            assertStored(ls[n - 1], h);
        }
    }

    /// The contract's in-place root (assembly) equals the reference tree for any size.
    function testFuzz_submitReportAnySize(uint8 n) public {
        n = uint8(bound(n, 1, 70));
        SibylFeed.Leaf[] memory ls = leaves(n, 5e8);
        SibylFeed.ReportHeader memory h = header(ls, 3, NOW_MS);
        feed.submitReport(meta(h), signWith(committee, h), ls);
        assertStored(ls[0], h);
        assertStored(ls[n - 1], h);
    }

    function test_submitFeedsWithProofs() public {
        SibylFeed.Leaf[] memory ls = leaves(7, 3_500e8); // 7: the last leaf is promoted
        SibylFeed.ReportHeader memory h = header(ls, 9, NOW_MS);
        uint256[] memory idx = new uint256[](3);
        (idx[0], idx[1], idx[2]) = (0, 3, 6);
        (SibylFeed.Leaf[] memory sub, bytes32[][] memory ps) = proofs(ls, idx);
        feed.submitFeeds(h, signWith(committee, h), sub, ps);
        for (uint256 i = 0; i < sub.length; i++) {
            assertStored(sub[i], h);
        }
        vm.expectRevert(abi.encodeWithSelector(SibylFeed.NoDataPresent.selector, ls[1].feedId));
        feed.latestFeed(ls[1].feedId);
    }

    function testFuzz_proofsForAnyTree(uint8 n, uint8 index) public {
        n = uint8(bound(n, 1, 40));
        index = uint8(bound(index, 0, n - 1));
        SibylFeed.Leaf[] memory ls = leaves(n, 1);
        SibylFeed.ReportHeader memory h = header(ls, 1, NOW_MS);
        uint256[] memory idx = new uint256[](1);
        idx[0] = index;
        (SibylFeed.Leaf[] memory sub, bytes32[][] memory ps) = proofs(ls, idx);
        feed.submitFeeds(h, signWith(committee, h), sub, ps);
        assertStored(ls[index], h);
    }

    function test_newerReportReplacesOlder() public {
        SibylFeed.Leaf[] memory ls = leaves(2, 100e8);
        SibylFeed.ReportHeader memory h1 = header(ls, 1, NOW_MS - 2000);
        feed.submitReport(meta(h1), signWith(committee, h1), ls);
        ls[1].price = -5e8; // negative prices are legal (spreads, rates)
        SibylFeed.ReportHeader memory h2 = header(ls, 2, NOW_MS - 1000);
        feed.submitReport(meta(h2), signWith(committee, h2), ls);
        assertStored(ls[1], h2);
    }

    function test_clockDriftAllowed() public {
        SibylFeed.Leaf[] memory ls = leaves(1, 1);
        SibylFeed.ReportHeader memory h = header(ls, 1, NOW_MS + DRIFT_MS);
        feed.submitReport(meta(h), signWith(committee, h), ls);
        assertStored(ls[0], h);
    }

    // ------------------------------------------------------------------ rejections

    function test_rejectsWrongSignature() public {
        SibylFeed.Leaf[] memory ls = leaves(3, 1e8);
        SibylFeed.ReportHeader memory h = header(ls, 1, NOW_MS);
        SibylFeed.Signature memory s = signWith(committee, h);
        s.z = addmod(s.z, 1, FrostSecp256k1.N);
        vm.expectRevert(SibylFeed.InvalidSignature.selector);
        feed.submitReport(meta(h), s, ls);
        // a valid signature of another header
        SibylFeed.ReportHeader memory other = header(ls, 2, NOW_MS);
        vm.expectRevert(SibylFeed.InvalidSignature.selector);
        feed.submitReport(meta(h), signWith(committee, other), ls);
        // signed by a stranger but claiming the committee's key
        SibylFeed.Signature memory forged = signWith(stranger, h);
        forged.groupKeyX = committee.x;
        vm.expectRevert(SibylFeed.InvalidSignature.selector);
        feed.submitReport(meta(h), forged, ls);
    }

    function test_rejectsWrongKey() public {
        SibylFeed.Leaf[] memory ls = leaves(3, 1e8);
        SibylFeed.ReportHeader memory h = header(ls, 1, NOW_MS);
        SibylFeed.Signature memory s = signWith(stranger, h);
        vm.expectRevert(
            abi.encodeWithSelector(SibylFeed.WrongGroupKey.selector, committee.x, stranger.x)
        );
        feed.submitReport(meta(h), s, ls);
    }

    function test_rejectsWrongConfigDigest() public {
        SibylFeed.Leaf[] memory ls = leaves(1, 1e8);
        SibylFeed.ReportHeader memory h = header(ls, 1, NOW_MS);
        h.configDigest = keccak256("another committee file");
        vm.expectRevert(
            abi.encodeWithSelector(SibylFeed.WrongConfigDigest.selector, CONFIG, h.configDigest)
        );
        feed.submitReport(meta(h), signWith(committee, h), ls);
    }

    function test_rejectsTamperedProof() public {
        SibylFeed.Leaf[] memory ls = leaves(6, 1e8);
        SibylFeed.ReportHeader memory h = header(ls, 1, NOW_MS);
        SibylFeed.Signature memory s = signWith(committee, h);
        uint256[] memory idx = new uint256[](2);
        (idx[0], idx[1]) = (1, 4);
        (SibylFeed.Leaf[] memory sub, bytes32[][] memory ps) = proofs(ls, idx);
        ps[1][0] ^= bytes32(uint256(1));
        vm.expectRevert(
            abi.encodeWithSelector(SibylFeed.InvalidMerkleProof.selector, sub[1].feedId)
        );
        feed.submitFeeds(h, s, sub, ps);
        // intact proof but a tampered value
        (sub, ps) = proofs(ls, idx);
        sub[0].price += 1;
        vm.expectRevert(
            abi.encodeWithSelector(SibylFeed.InvalidMerkleProof.selector, sub[0].feedId)
        );
        feed.submitFeeds(h, s, sub, ps);
        sub[0].price -= 1; // sub[0] aliases ls[1] in memory
        // a proof of another leaf
        (sub, ps) = proofs(ls, idx);
        ps[0] = ps[1];
        vm.expectRevert(
            abi.encodeWithSelector(SibylFeed.InvalidMerkleProof.selector, sub[0].feedId)
        );
        feed.submitFeeds(h, s, sub, ps);
        // the untampered call goes through
        (sub, ps) = proofs(ls, idx);
        feed.submitFeeds(h, s, sub, ps);
        assertStored(sub[1], h);
    }

    function test_rejectsTamperedLeavesInFullReport() public {
        SibylFeed.Leaf[] memory ls = leaves(4, 1e8);
        SibylFeed.ReportHeader memory h = header(ls, 1, NOW_MS);
        SibylFeed.Signature memory s = signWith(committee, h);
        ls[2].confidence += 1;
        vm.expectRevert(SibylFeed.InvalidSignature.selector);
        feed.submitReport(meta(h), s, ls);
        ls[2].confidence -= 1;
        // dropping a leaf changes the root too
        SibylFeed.Leaf[] memory three = new SibylFeed.Leaf[](3);
        for (uint256 i = 0; i < 3; i++) {
            three[i] = ls[i];
        }
        vm.expectRevert(SibylFeed.InvalidSignature.selector);
        feed.submitReport(meta(h), s, three);
        // so does swapping two leaves of different pairs
        (ls[0], ls[2]) = (ls[2], ls[0]);
        vm.expectRevert(SibylFeed.InvalidSignature.selector);
        feed.submitReport(meta(h), s, ls);
        (ls[0], ls[2]) = (ls[2], ls[0]);
        feed.submitReport(meta(h), s, ls);
        assertStored(ls[3], h);
    }

    function roundOf(bytes32 feedId) internal view returns (uint80 roundId) {
        (, roundId) = feed.feedInfo(feedId);
    }

    function test_staleLeafIsSkippedNotReverted() public {
        SibylFeed.Leaf[] memory ls = leaves(2, 1e8);
        SibylFeed.ReportHeader memory h = header(ls, 5, NOW_MS - 10);
        SibylFeed.Signature memory s = signWith(committee, h);
        feed.submitReport(meta(h), s, ls);
        assertEq(roundOf(ls[0].feedId), 1);
        // the same report again: both leaves skipped, nothing changes
        vm.expectEmit(address(feed));
        emit SibylFeed.FeedSkipped(ls[0].feedId, 1);
        vm.expectEmit(address(feed));
        emit SibylFeed.FeedSkipped(ls[1].feedId, 1);
        feed.submitReport(meta(h), s, ls);
        assertEq(roundOf(ls[0].feedId), 1);
        // an older one
        SibylFeed.ReportHeader memory old = header(ls, 4, NOW_MS - 20);
        feed.submitReport(meta(old), signWith(committee, old), ls);
        assertStored(ls[0], h);
        assertEq(roundOf(ls[1].feedId), 1);
        // one leaf twice in one call: the first lands, the second is skipped
        ls[0].price += 7;
        SibylFeed.ReportHeader memory h2 = header(ls, 6, NOW_MS);
        uint256[] memory idx = new uint256[](2);
        (SibylFeed.Leaf[] memory sub, bytes32[][] memory ps) = proofs(ls, idx);
        vm.expectEmit(address(feed));
        emit SibylFeed.FeedSkipped(ls[0].feedId, 1);
        feed.submitFeeds(h2, signWith(committee, h2), sub, ps);
        assertStored(ls[0], h2);
        assertEq(roundOf(ls[0].feedId), 2);
    }

    function test_unknownFeedIsSkipped() public {
        SibylFeed.Leaf[] memory ls = leaves(2, 1e8);
        ls[1].feedId = ReportBuilder.feedId("ZZZ-UNREGISTERED");
        SibylFeed.ReportHeader memory h = header(ls, 1, NOW_MS);
        vm.expectEmit(address(feed));
        emit SibylFeed.FeedSkipped(ls[1].feedId, 3);
        feed.submitReport(meta(h), signWith(committee, h), ls);
        assertStored(ls[0], h);
        vm.expectRevert(abi.encodeWithSelector(SibylFeed.NoDataPresent.selector, ls[1].feedId));
        feed.latestFeed(ls[1].feedId);
        vm.expectRevert(abi.encodeWithSelector(SibylFeed.UnknownFeed.selector, ls[1].feedId));
        feed.feedInfo(ls[1].feedId);
    }

    function test_rejectsReportFromFuture() public {
        SibylFeed.Leaf[] memory ls = leaves(1, 1e8);
        SibylFeed.ReportHeader memory h = header(ls, 1, NOW_MS + DRIFT_MS + 1);
        vm.expectRevert(
            abi.encodeWithSelector(SibylFeed.ReportFromFuture.selector, h.timestampMs, NOW_MS)
        );
        feed.submitReport(meta(h), signWith(committee, h), ls);
    }

    function test_rejectsMalformedCalls() public {
        SibylFeed.Leaf[] memory ls = leaves(2, 1e8);
        SibylFeed.ReportHeader memory h = header(ls, 1, NOW_MS);
        SibylFeed.Signature memory s = signWith(committee, h);
        vm.expectRevert(SibylFeed.NoLeaves.selector);
        feed.submitReport(meta(h), s, new SibylFeed.Leaf[](0));
        vm.expectRevert(SibylFeed.NoLeaves.selector);
        feed.submitFeeds(h, s, new SibylFeed.Leaf[](0), new bytes32[][](0));
        vm.expectRevert(abi.encodeWithSelector(SibylFeed.ProofCountMismatch.selector, 2, 1));
        feed.submitFeeds(h, s, ls, new bytes32[][](1));
        // protocol version 1 (a header without margin root) and a future version 3
        for (uint8 v = 1; v <= 3; v += 2) {
            SibylFeed.ReportHeader memory other = header(ls, 1, NOW_MS);
            other.version = v;
            vm.expectRevert(abi.encodeWithSelector(SibylFeed.UnsupportedVersion.selector, v));
            feed.submitReport(meta(other), signWith(committee, other), ls);
        }
    }

    /// The margin root is signed: a header with another one fails the signature on the push,
    /// proof and packed pull paths and in verifyReport; the digest is the 7-word one.
    function test_marginRootIsSigned() public {
        SibylFeed.Leaf[] memory ls = leaves(3, 1e8);
        SibylFeed.ReportHeader memory h = header(ls, 1, NOW_MS);
        SibylFeed.Signature memory s = signWith(committee, h);
        assertEq(feed.reportDigest(h), ReportBuilder.digest(h), "digest");
        assertEq(feed.verifyReport(h, s), ReportBuilder.digest(h));
        SibylFeed.ReportHeader memory zero = header(ls, 1, NOW_MS);
        zero.marginRoot = bytes32(0);
        assertTrue(feed.reportDigest(zero) != feed.reportDigest(h), "margin root in the digest");
        (SibylFeed.Leaf[] memory sub, bytes32[][] memory ps) = proofs(ls, indices1(1));
        bytes memory payload = ReportBuilder.pullPayload(h, s, sub, ps);
        // the payload carries it right after the timestamp
        assertEq(bytes32(slice(payload, 49)), MARGIN, "payload marginRoot at byte 49");

        vm.expectRevert(SibylFeed.InvalidSignature.selector);
        feed.verifyReport(zero, s);
        vm.expectRevert(SibylFeed.InvalidSignature.selector);
        feed.submitReport(meta(zero), s, ls);
        vm.expectRevert(SibylFeed.InvalidSignature.selector);
        feed.submitFeeds(zero, s, sub, ps);
        bytes memory tampered = bytes.concat(payload);
        tampered[80] = bytes1(uint8(tampered[80]) ^ 1);
        vm.expectRevert(SibylFeed.InvalidSignature.selector);
        feed.updateFeeds(tampered);
        assertEq(roundOf(ls[1].feedId), 0, "nothing stored");

        assertEq(feed.updateFeeds(payload), 1);
        feed.submitReport(meta(h), s, ls);
        assertStored(ls[2], h);
    }

    function test_valueOutOfRangeIsSkipped() public {
        SibylFeed.Leaf[] memory ls = leaves(2, 1);
        ls[0].price = int256(type(int96).max) + 1;
        SibylFeed.ReportHeader memory h = header(ls, 1, NOW_MS - 10);
        vm.expectEmit(address(feed));
        emit SibylFeed.FeedSkipped(ls[0].feedId, 2);
        feed.submitReport(meta(h), signWith(committee, h), ls);
        assertEq(roundOf(ls[0].feedId), 0);
        assertStored(ls[1], h);
        ls[0].price = type(int96).min;
        ls[0].confidence = type(uint72).max;
        h = header(ls, 2, NOW_MS);
        feed.submitReport(meta(h), signWith(committee, h), ls);
        assertStored(ls[0], h);
        ls[0].confidence = uint256(type(uint72).max) + 1;
        h = header(ls, 3, NOW_MS + 1);
        vm.expectEmit(address(feed));
        emit SibylFeed.FeedSkipped(ls[0].feedId, 2);
        feed.submitReport(meta(h), signWith(committee, h), ls);
        assertEq(roundOf(ls[0].feedId), 1);
    }

    function test_roundIdsCountStoredValuesPerFeed() public {
        SibylFeed.Leaf[] memory ls = leaves(3, 1e8);
        for (uint64 r = 1; r <= 5; r++) {
            // feed 0 in every report, feed 1 in every other one, feed 2 never
            SibylFeed.Leaf[] memory some = new SibylFeed.Leaf[](r % 2 == 1 ? 2 : 1);
            some[0] = ls[0];
            if (some.length == 2) some[1] = ls[1];
            SibylFeed.ReportHeader memory h = header(some, 1_000 * r, NOW_MS - 100 + r);
            feed.submitReport(meta(h), signWith(committee, h), some);
        }
        assertEq(roundOf(ls[0].feedId), 5);
        assertEq(roundOf(ls[1].feedId), 3);
        assertEq(roundOf(ls[2].feedId), 0);
        (bool found,,,) = feed.getRoundData(ls[0].feedId, 4);
        assertTrue(found, "previous round held");
        (found,,,) = feed.getRoundData(ls[0].feedId, 3);
        assertFalse(found, "two rounds back is overwritten");
        (found,,,) = feed.getRoundData(ls[0].feedId, 6);
        assertFalse(found, "future round");
    }

    // ------------------------------------------------------------------ rotation

    bytes32[] internal noFeeds;
    uint8[] internal noDecimals;

    function rotationMessage(bytes32 to, FrostSigner.Key memory next)
        internal
        view
        returns (bytes32)
    {
        (bytes32 from,,) = feed.committee();
        return feed.rotationDigest(
            block.chainid,
            address(feed),
            feed.rotationCount(),
            from,
            to,
            next.x,
            next.y,
            noFeeds,
            noDecimals
        );
    }

    function rotate(bytes32 to, FrostSigner.Key memory by, FrostSigner.Key memory next) internal {
        bytes32 m = rotationMessage(to, next);
        feed.rotateCommittee(
            to,
            next.x,
            next.y,
            noFeeds,
            noDecimals,
            ReportBuilder.sign(by, nonceCounter++, m),
            ReportBuilder.sign(next, nonceCounter++, m)
        );
    }

    function test_rotationHandsOverToNewCommittee() public {
        FrostSigner.Key memory next = FrostSigner.key(0xD1CE);
        bytes32 nextConfig = keccak256("committee file v2");
        SibylFeed.Leaf[] memory ls = leaves(1, 1e8);
        SibylFeed.ReportHeader memory h0 = header(ls, 900, NOW_MS - 10);
        feed.submitReport(meta(h0), signWith(committee, h0), ls);
        bytes32 m = rotationMessage(nextConfig, next);
        SibylFeed.Signature memory s = ReportBuilder.sign(committee, 1, m);
        SibylFeed.Signature memory pop = ReportBuilder.sign(next, 2, m);
        vm.expectEmit(address(feed));
        emit SibylFeed.CommitteeRotated(CONFIG, nextConfig, next.x, uint8(next.y & 1));
        feed.rotateCommittee(nextConfig, next.x, next.y, noFeeds, noDecimals, s, pop);
        (bytes32 digest, uint256 keyX, uint8 parity) = feed.committee();
        assertEq(digest, nextConfig);
        assertEq(keyX, next.x);
        assertEq(parity, next.y & 1);
        assertEq(feed.rotationCount(), 1);

        // the old committee is out
        SibylFeed.ReportHeader memory h = header(ls, 1, NOW_MS);
        vm.expectRevert(
            abi.encodeWithSelector(SibylFeed.WrongConfigDigest.selector, nextConfig, CONFIG)
        );
        feed.submitReport(meta(h), signWith(committee, h), ls);
        h.configDigest = nextConfig;
        vm.expectPartialRevert(SibylFeed.WrongGroupKey.selector);
        feed.submitReport(meta(h), signWith(committee, h), ls);
        // the new one is in; its rounds restart, the feed's round id goes on
        ls[0].price += 1;
        h = header(ls, 1, NOW_MS);
        h.configDigest = nextConfig;
        feed.submitReport(meta(h), signWith(next, h), ls);
        assertStored(ls[0], h);
        assertEq(roundOf(ls[0].feedId), 2);
        // the rotation message cannot be replayed
        vm.expectRevert(SibylFeed.ConfigDigestUnchanged.selector);
        feed.rotateCommittee(nextConfig, next.x, next.y, noFeeds, noDecimals, s, pop);
    }

    function test_rotationRejectsWrongSigner() public {
        FrostSigner.Key memory next = FrostSigner.key(0xD1CE);
        bytes32 nextConfig = keccak256("committee file v2");
        bytes32 m = rotationMessage(nextConfig, next);
        // the newcomer cannot appoint itself
        vm.expectPartialRevert(SibylFeed.WrongGroupKey.selector);
        feed.rotateCommittee(
            nextConfig,
            next.x,
            next.y,
            noFeeds,
            noDecimals,
            ReportBuilder.sign(next, 3, m),
            ReportBuilder.sign(next, 4, m)
        );
        // a committee signature over a different handover
        SibylFeed.Signature memory s = ReportBuilder.sign(committee, 5, m);
        SibylFeed.Signature memory pop = ReportBuilder.sign(next, 6, m);
        vm.expectRevert(SibylFeed.InvalidSignature.selector);
        feed.rotateCommittee(nextConfig, stranger.x, stranger.y, noFeeds, noDecimals, s, pop);
        vm.expectRevert(SibylFeed.InvalidSignature.selector);
        feed.rotateCommittee(keccak256("v3"), next.x, next.y, noFeeds, noDecimals, s, pop);
        // not a curve point
        FrostSigner.Key memory offCurve = FrostSigner.key(0xD1CE);
        offCurve.y += 1;
        bytes32 mBad = rotationMessage(nextConfig, offCurve);
        vm.expectRevert(
            abi.encodeWithSelector(SibylFeed.InvalidGroupKey.selector, next.x, next.y + 1)
        );
        feed.rotateCommittee(
            nextConfig,
            next.x,
            next.y + 1,
            noFeeds,
            noDecimals,
            ReportBuilder.sign(committee, 7, mBad),
            ReportBuilder.sign(next, 8, mBad)
        );
        (bytes32 digest,,) = feed.committee();
        assertEq(digest, CONFIG);
        // the committee's own signature goes through
        feed.rotateCommittee(nextConfig, next.x, next.y, noFeeds, noDecimals, s, pop);
    }

    function test_rotationRegistersFeedsAndKeepsDecimals() public {
        FrostSigner.Key memory next = FrostSigner.key(0xD1CE);
        bytes32 nextConfig = keccak256("committee file v2");
        noFeeds.push(ReportBuilder.feedId("NEW-USD"));
        noDecimals.push(18);
        noFeeds.push(ReportBuilder.feedId("FEED-100"));
        noDecimals.push(8);
        rotate(nextConfig, committee, next);
        (uint8 d,) = feed.feedInfo(ReportBuilder.feedId("NEW-USD"));
        assertEq(d, 18);
        // a registered feed's decimals never change
        noDecimals[1] = 6;
        bytes32 m = rotationMessage(keccak256("v3"), committee);
        vm.expectRevert(
            abi.encodeWithSelector(
                SibylFeed.DecimalsChanged.selector, ReportBuilder.feedId("FEED-100"), 8, 6
            )
        );
        feed.rotateCommittee(
            keccak256("v3"),
            committee.x,
            committee.y,
            noFeeds,
            noDecimals,
            ReportBuilder.sign(next, 9, m),
            ReportBuilder.sign(committee, 10, m)
        );
    }

    // ------------------------------------------------------------------ Chainlink adapter

    function test_aggregatorV3Adapter() public {
        SibylFeed.Leaf[] memory ls = leaves(3, 97_123e8);
        SibylAggregatorV3 agg = new SibylAggregatorV3(feed, ls[1].feedId, "FEED-101 / Sibyl");
        assertEq(agg.decimals(), 8);
        assertEq(agg.description(), "FEED-101 / Sibyl");
        assertEq(agg.version(), 2);
        vm.expectRevert(bytes("No data present"));
        agg.latestRoundData();
        vm.expectRevert(bytes("No data present"));
        agg.getRoundData(0);
        assertEq(agg.latestAnswer(), 0);
        assertEq(agg.latestRound(), 0);
        assertEq(agg.latestTimestamp(), 0);

        SibylFeed.ReportHeader memory h = header(ls, 77, NOW_MS - 1500);
        feed.submitReport(meta(h), signWith(committee, h), ls);
        (uint80 roundId, int256 answer, uint256 startedAt, uint256 updatedAt, uint80 answeredIn) =
            agg.latestRoundData();
        assertEq(roundId, 1);
        assertEq(answer, ls[1].price);
        assertEq(startedAt, NOW_S - 2); // 1.5 s before NOW, rounded down to whole seconds
        assertEq(updatedAt, NOW_S - 2);
        assertEq(answeredIn, 1);
        assertEq(agg.latestConfidence(), ls[1].confidence);
        assertEq(agg.latestAnswer(), ls[1].price);
        assertEq(agg.latestRound(), 1);
        assertEq(agg.latestTimestamp(), NOW_S - 2);
        assertEq(agg.getAnswer(1), ls[1].price);
        assertEq(agg.getTimestamp(1), NOW_S - 2);
        assertEq(agg.getAnswer(2), 0);
        (roundId, answer,,,) = agg.getRoundData(1);
        assertEq(answer, ls[1].price);
        vm.expectRevert(bytes("No data present"));
        agg.getRoundData(2);
        vm.expectRevert(abi.encodeWithSelector(SibylFeed.UnknownFeed.selector, bytes32("NOPE")));
        new SibylAggregatorV3(feed, bytes32("NOPE"), "unregistered");
    }

    /// A report up to maxClockDriftMs ahead of the block is stored, but reads never show an
    /// updatedAt later than block.timestamp.
    function test_updatedAtNeverAfterBlock() public {
        SibylFeed.Leaf[] memory ls = leaves(1, 1e8);
        SibylAggregatorV3 agg = new SibylAggregatorV3(feed, ls[0].feedId, "FEED-100");
        SibylFeed.ReportHeader memory h = header(ls, 1, NOW_MS + DRIFT_MS);
        feed.submitReport(meta(h), signWith(committee, h), ls);
        (,,, uint256 updatedAt,) = agg.latestRoundData();
        assertEq(updatedAt, NOW_S);
        assertEq(agg.latestTimestamp(), NOW_S);
        vm.warp(NOW_S + 60);
        (,,, updatedAt,) = agg.latestRoundData();
        assertEq(updatedAt, NOW_S + DRIFT_MS / 1000);
    }

    // ------------------------------------------------------------------ pull payloads

    function pullPayload(SibylFeed.Leaf[] memory all, uint256[] memory idx, uint64 round, uint64 ts)
        internal
        returns (bytes memory, SibylFeed.Leaf[] memory)
    {
        (SibylFeed.Leaf[] memory sub, bytes32[][] memory ps) = proofs(all, idx);
        SibylFeed.ReportHeader memory h = header(all, round, ts);
        return (ReportBuilder.pullPayload(h, signWith(committee, h), sub, ps), sub);
    }

    function indices(uint256 a, uint256 b, uint256 c) internal pure returns (uint256[] memory i) {
        i = new uint256[](3);
        (i[0], i[1], i[2]) = (a, b, c);
    }

    /// Seven leaves (an odd tree: the last leaf is promoted, so proofs differ in depth); the
    /// consumer library stores three of them and reads them back; the same payload again
    /// stores nothing and does not revert.
    function test_pullPayloadThroughTheLibrary() public {
        SibylFeed.Leaf[] memory ls = leaves(7, 64_000e8);
        ls[6].bid = -5e8; // negative values must come back sign-extended in the leaf hash
        ls[6].ema = type(int128).min;
        ls[6].volatility = type(uint64).max;
        (bytes memory payload, SibylFeed.Leaf[] memory sub) =
            pullPayload(ls, indices(0, 3, 6), 9, NOW_MS - 50);
        PullConsumer consumer = new PullConsumer(feed);
        bytes32[] memory ids = new bytes32[](3);
        for (uint256 i = 0; i < 3; i++) {
            ids[i] = sub[i].feedId;
        }
        SibylPull.Price[] memory got = consumer.settleMany(payload, ids);
        for (uint256 i = 0; i < 3; i++) {
            assertEq(got[i].price, sub[i].price, "price");
            assertEq(got[i].confidence, sub[i].confidence, "confidence");
            assertEq(got[i].decimals, 8, "decimals");
            assertEq(got[i].timestamp, (NOW_MS - 50) / 1000, "timestamp");
        }
        assertEq(roundOf(ls[1].feedId), 0, "a feed not in the payload is untouched");
        assertEq(feed.updateFeeds(payload), 0, "a replay stores nothing");
        assertEq(roundOf(ls[0].feedId), 1, "a replay does not advance the round id");
    }

    function test_pullPayloadWithA32ByteFeedId() public {
        bytes32 longId = ReportBuilder.feedId("ABCDEFGHIJKLMNOPQRSTUVWXYZ-01234");
        bytes32[] memory ids = new bytes32[](1);
        uint8[] memory ds = new uint8[](1);
        (ids[0], ds[0]) = (longId, 8);
        SibylFeed f = new SibylFeed(CONFIG, committee.x, committee.y, DRIFT_MS, ids, ds);
        SibylFeed.Leaf[] memory ls = leaves(1, 5e8);
        ls[0].feedId = longId;
        (bytes memory payload,) = pullPayload(ls, indices1(0), 3, NOW_MS);
        assertEq(payload.length, LEAVES_AT + 1 + 32 + 119 + 1, "payload layout");
        assertEq(f.updateFeeds(payload), 1);
        (int256 price,,,) = f.latestFeed(longId);
        assertEq(price, 5e8);
    }

    function indices1(uint256 a) internal pure returns (uint256[] memory i) {
        i = new uint256[](1);
        i[0] = a;
    }

    /// Every truncation and every extension of a valid payload is refused, and so are a header
    /// without leaves, an id longer than 32 bytes, leaves of two reports, a changed leaf, a
    /// wrong committee key; none of them stores anything.
    function test_malformedPullPayloadsAreRefused() public {
        SibylFeed.Leaf[] memory ls = leaves(5, 1e8);
        (bytes memory payload,) = pullPayload(ls, indices(0, 2, 4), 1, NOW_MS);
        // Where each leaf ends: cutting there leaves a valid payload of the leaves before.
        bool[] memory boundary = new bool[](payload.length + 1);
        for (uint256 at = LEAVES_AT; at < payload.length;) {
            uint256 q = at + 1 + uint8(payload[at]);
            at = q + 120 + 32 * uint8(payload[q + 119]);
            boundary[at] = true;
        }
        for (uint256 len = 0; len < payload.length; len++) {
            bytes memory shorter = new bytes(len);
            for (uint256 i = 0; i < len; i++) {
                shorter[i] = payload[i];
            }
            if (boundary[len]) {
                uint256 snap = vm.snapshotState();
                assertGt(feed.updateFeeds(shorter), 0, "a cut between leaves is a valid payload");
                vm.revertToState(snap);
                continue;
            }
            vm.expectRevert();
            feed.updateFeeds(shorter);
        }
        vm.expectRevert(SibylFeed.MalformedPayload.selector);
        feed.updateFeeds(bytes.concat(payload, hex"00"));
        bytes memory headerOnly = new bytes(LEAVES_AT);
        for (uint256 i = 0; i < LEAVES_AT; i++) {
            headerOnly[i] = payload[i];
        }
        vm.expectRevert(SibylFeed.NoLeaves.selector);
        feed.updateFeeds(headerOnly);
        bytes memory longId = bytes.concat(payload);
        longId[LEAVES_AT] = bytes1(uint8(33));
        vm.expectRevert(SibylFeed.MalformedPayload.selector);
        feed.updateFeeds(longId);
        // a leaf of another report (other prices, so another root) after this report's leaf
        SibylFeed.Leaf[] memory other = leaves(5, 2e8);
        (bytes memory otherPayload,) = pullPayload(other, indices1(1), 1, NOW_MS);
        (bytes memory first,) = pullPayload(ls, indices1(0), 1, NOW_MS);
        bytes memory mixed = bytes.concat(first, slice(otherPayload, LEAVES_AT));
        vm.expectRevert(
            abi.encodeWithSelector(SibylFeed.InvalidMerkleProof.selector, other[1].feedId)
        );
        feed.updateFeeds(mixed);
        // one changed byte of a price: another root (the next leaf's proof no longer agrees)
        bytes memory tampered = bytes.concat(payload);
        tampered[LEAVES_AT + 1 + 8 + 15] = bytes1(uint8(tampered[LEAVES_AT + 1 + 8 + 15]) ^ 1);
        vm.expectRevert(abi.encodeWithSelector(SibylFeed.InvalidMerkleProof.selector, ls[2].feedId));
        feed.updateFeeds(tampered);
        // ... and alone, the signature over that root fails
        tampered = bytes.concat(first);
        tampered[LEAVES_AT + 1 + 8 + 15] = bytes1(uint8(tampered[LEAVES_AT + 1 + 8 + 15]) ^ 1);
        vm.expectRevert(SibylFeed.InvalidSignature.selector);
        feed.updateFeeds(tampered);
        // signed by another key
        SibylFeed.ReportHeader memory h = header(ls, 1, NOW_MS);
        (SibylFeed.Leaf[] memory sub, bytes32[][] memory ps) = proofs(ls, indices1(0));
        bytes memory foreign = ReportBuilder.pullPayload(h, signWith(stranger, h), sub, ps);
        vm.expectRevert(
            abi.encodeWithSelector(SibylFeed.WrongGroupKey.selector, committee.x, stranger.x)
        );
        feed.updateFeeds(foreign);
        for (uint256 i = 0; i < 5; i++) {
            assertEq(roundOf(ls[i].feedId), 0, "nothing stored");
        }
        assertEq(feed.updateFeeds(payload), 3, "the genuine payload still lands");
    }

    function slice(bytes memory b, uint256 from) internal pure returns (bytes memory out) {
        out = new bytes(b.length - from);
        for (uint256 i = 0; i < out.length; i++) {
            out[i] = b[from + i];
        }
    }

    /// The library refuses a feed address without code instead of "succeeding" silently.
    function test_pullLibraryRefusesAnAddressWithoutCode() public {
        PullConsumer consumer = new PullConsumer(SibylFeed(address(0xdead)));
        (bytes memory payload,) = pullPayload(leaves(2, 1e8), indices1(0), 1, NOW_MS);
        vm.expectRevert();
        consumer.settle(payload, leaves(2, 1e8)[0].feedId);
    }
}
