// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {Test} from "forge-std/Test.sol";
import {SibylFeed} from "../src/SibylFeed.sol";
import {FrostSecp256k1} from "../src/FrostSecp256k1.sol";
import {ReportBuilder} from "./utils/ReportBuilder.sol";

/// The protocol core's shared vectors (aggregator/vectors/report_vectors.json, written by
/// `cargo run -p sibyl-aggregator --example gen_vectors`): reports signed by a 3-of-4
/// FROST(secp256k1, Keccak-256) committee in Rust must verify on chain byte for byte, and
/// the tampered ones must fail with the matching error.
contract VectorsTest is Test {
    string internal constant PATH = "../aggregator/vectors/report_vectors.json";

    string internal json;
    uint256 internal keyX;
    uint256 internal keyY;

    function setUp() public {
        json = vm.readFile(PATH);
        keyX = vm.parseJsonUint(json, ".committee.secp256k1_evm.public_key_x");
        keyY = vm.parseJsonUint(json, ".committee.secp256k1_evm.public_key_y");
        assertEq(keyY & 1, vm.parseJsonUint(json, ".committee.secp256k1_evm.public_key_parity"));
    }

    // ------------------------------------------------------------------ reading

    function str(string memory a, uint256 i, string memory b)
        internal
        pure
        returns (string memory)
    {
        return string.concat(a, vm.toString(i), b);
    }

    function header(string memory at) internal view returns (SibylFeed.ReportHeader memory h) {
        h.version = uint8(vm.parseJsonUint(json, string.concat(at, ".version")));
        h.configDigest = vm.parseJsonBytes32(json, string.concat(at, ".config_digest"));
        h.round = uint64(vm.parseJsonUint(json, string.concat(at, ".round")));
        h.timestampMs = uint64(vm.parseJsonUint(json, string.concat(at, ".timestamp_ms")));
        h.merkleRoot = vm.parseJsonBytes32(json, string.concat(at, ".merkle_root"));
        h.marginRoot = vm.parseJsonBytes32(json, string.concat(at, ".margin_root"));
    }

    function leaf(string memory at) internal view returns (SibylFeed.Leaf memory l) {
        l.feedId = vm.parseJsonBytes32(json, string.concat(at, ".feed_id_bytes32"));
        l.price = vm.parseJsonInt(json, string.concat(at, ".price"));
        l.confidence = vm.parseJsonUint(json, string.concat(at, ".confidence"));
        l.numObservations = uint16(vm.parseJsonUint(json, string.concat(at, ".num_observations")));
        l.observedAtMs = uint64(vm.parseJsonUint(json, string.concat(at, ".observed_at_ms")));
        l.bid = vm.parseJsonInt(json, string.concat(at, ".bid"));
        l.ask = vm.parseJsonInt(json, string.concat(at, ".ask"));
        l.venues = uint16(vm.parseJsonUint(json, string.concat(at, ".venues")));
        l.status = uint8(vm.parseJsonUint(json, string.concat(at, ".status")));
        l.flags = uint16(vm.parseJsonUint(json, string.concat(at, ".flags")));
        l.ema = vm.parseJsonInt(json, string.concat(at, ".ema"));
        l.emaConfidence = vm.parseJsonUint(json, string.concat(at, ".ema_confidence"));
        l.volatility = uint64(vm.parseJsonUint(json, string.concat(at, ".volatility")));
    }

    function signature(string memory at) internal view returns (SibylFeed.Signature memory s) {
        string memory p = string.concat(at, ".signatures.secp256k1_evm");
        s.groupKeyX = keyX;
        s.rx = vm.parseJsonUint(json, string.concat(p, ".r_x"));
        s.ry = vm.parseJsonUint(json, string.concat(p, ".r_y"));
        s.z = vm.parseJsonUint(json, string.concat(p, ".z"));
    }

    function siblings(string memory at) internal view returns (bytes32[] memory) {
        return abi.decode(vm.parseJson(json, string.concat(at, ".siblings")), (bytes32[]));
    }

    function caseCount() internal view returns (uint256 n) {
        while (vm.keyExistsJson(json, str(".cases[", n, "]"))) n++;
    }

    function invalidCount() internal view returns (uint256 n) {
        while (vm.keyExistsJson(json, str(".invalid[", n, "]"))) n++;
    }

    bytes32[] internal registryIds;
    uint8[] internal registryDecimals;

    /// A feed contract for the vectors' committee with every feed id the vectors use
    /// registered (8 decimals: the registry is not part of the signed report).
    function deploy(SibylFeed.ReportHeader memory h) internal returns (SibylFeed) {
        if (registryIds.length == 0) {
            uint256 cases = caseCount();
            for (uint256 c = 0; c < cases; c++) {
                string memory at = str(".cases[", c, "]");
                uint256 n = vm.parseJsonBytes32Array(json, string.concat(at, ".leaf_hashes")).length;
                for (uint256 i = 0; i < n; i++) {
                    registryIds.push(leaf(str(string.concat(at, ".leaves["), i, "]")).feedId);
                    registryDecimals.push(8);
                }
            }
            uint256 invalid = invalidCount();
            for (uint256 c = 0; c < invalid; c++) {
                registryIds.push(leaf(string.concat(str(".invalid[", c, "]"), ".leaf")).feedId);
                registryDecimals.push(8);
            }
        }
        // an id listed twice with equal decimals is registered once
        return new SibylFeed(h.configDigest, keyX, keyY, 5_000, registryIds, registryDecimals);
    }

    function meta(SibylFeed.ReportHeader memory h)
        internal
        pure
        returns (SibylFeed.ReportMeta memory)
    {
        return SibylFeed.ReportMeta(h.version, h.configDigest, h.round, h.timestampMs, h.marginRoot);
    }

    function fitsStorage(SibylFeed.ReportHeader memory h, SibylFeed.Leaf[] memory ls)
        internal
        pure
        returns (bool)
    {
        if (h.timestampMs > type(uint48).max) return false;
        for (uint256 i = 0; i < ls.length; i++) {
            if (ls[i].price < type(int96).min || ls[i].price > type(int96).max) return false;
            if (ls[i].confidence > type(uint72).max) return false;
        }
        return true;
    }

    // ------------------------------------------------------------------ valid cases

    function test_vectorsVerifyOnChain() public {
        uint256 n = caseCount();
        assertGe(n, 4, "vector cases");
        uint256 withCommands;
        for (uint256 c = 0; c < n; c++) {
            string memory at = str(".cases[", c, "]");
            SibylFeed.ReportHeader memory h = header(string.concat(at, ".header"));
            SibylFeed.Signature memory s = signature(at);
            SibylFeed feed = deploy(h);

            // digest and challenge agree with Rust
            bytes32 digest = vm.parseJsonBytes32(json, string.concat(at, ".digest"));
            assertEq(feed.reportDigest(h), digest, "digest");
            assertEq(
                FrostSecp256k1.challenge(s.rx, s.ry & 1 == 1, keyX, keyY & 1 == 1, digest),
                vm.parseJsonUint(json, string.concat(at, ".signatures.secp256k1_evm.challenge")),
                "challenge"
            );
            assertEq(feed.verifyReport(h, s), digest);

            // leaves, Merkle root and every proof
            bytes32[] memory hashes =
                vm.parseJsonBytes32Array(json, string.concat(at, ".leaf_hashes"));
            SibylFeed.Leaf[] memory ls = new SibylFeed.Leaf[](hashes.length);
            bytes32[][] memory proofs = new bytes32[][](hashes.length);
            for (uint256 i = 0; i < ls.length; i++) {
                ls[i] = leaf(str(string.concat(at, ".leaves["), i, "]"));
                assertEq(ReportBuilder.leafHash(ls[i]), hashes[i], "leaf hash");
                string memory pat = str(string.concat(at, ".proofs["), i, "]");
                assertEq(vm.parseJsonUint(json, string.concat(pat, ".leaf_index")), i);
                proofs[i] = siblings(pat);
                assertTrue(feed.verifyLeaf(h.merkleRoot, ls[i], proofs[i]), "proof");
            }
            assertEq(ReportBuilder.root(ls), h.merkleRoot, "root");

            if (!fitsStorage(h, ls)) {
                // extreme-values: i128/u128/u64 extremes verify but do not fit FeedValue
                vm.warp(block.timestamp); // keep the clock: the u64-max timestamp is in the future
                vm.expectPartialRevert(SibylFeed.ReportFromFuture.selector);
                feed.submitReport(meta(h), s, ls);
                continue;
            }

            // pushed whole, and pulled feed by feed into a second deployment
            vm.warp(h.timestampMs / 1000 + 1);
            feed.submitReport(meta(h), s, ls);
            SibylFeed pulled = deploy(h);
            pulled.submitFeeds(h, s, ls, proofs);
            for (uint256 i = 0; i < ls.length; i++) {
                (int256 price, uint256 conf, uint64 ts, uint64 roundId) =
                    feed.latestFeed(ls[i].feedId);
                assertEq(price, ls[i].price);
                assertEq(conf, ls[i].confidence);
                assertEq(ts, h.timestampMs);
                assertEq(roundId, 1, "first value of the feed: round id 1");
                (price,,,) = pulled.latestFeed(ls[i].feedId);
                assertEq(price, ls[i].price);
            }

            // the same vector tampered: z, a leaf, the header's round
            SibylFeed fresh = deploy(h);
            SibylFeed.Signature memory bad =
                SibylFeed.Signature(s.groupKeyX, s.rx, s.ry, addmod(s.z, 1, FrostSecp256k1.N));
            vm.expectRevert(SibylFeed.InvalidSignature.selector);
            fresh.submitReport(meta(h), bad, ls);
            ls[0].price ^= 1;
            vm.expectRevert(SibylFeed.InvalidSignature.selector);
            fresh.submitReport(meta(h), s, ls);
            vm.expectRevert(
                abi.encodeWithSelector(SibylFeed.InvalidMerkleProof.selector, ls[0].feedId)
            );
            fresh.submitFeeds(h, s, ls, proofs);
            ls[0].price ^= 1;
            h.round += 1;
            vm.expectRevert(SibylFeed.InvalidSignature.selector);
            fresh.submitReport(meta(h), s, ls);
            // ... and its margin root (signed, though the contract does not read it)
            h.round -= 1;
            h.marginRoot ^= bytes32(uint256(1));
            vm.expectRevert(SibylFeed.InvalidSignature.selector);
            fresh.submitReport(meta(h), s, ls);
            vm.expectRevert(SibylFeed.InvalidSignature.selector);
            fresh.submitFeeds(h, s, ls, proofs);
            h.marginRoot ^= bytes32(uint256(1));
            if (h.marginRoot != bytes32(0)) withCommands++;
        }
        assertGe(withCommands, 1, "a vector with margin commands (a non-zero margin root)");
    }

    // ------------------------------------------------------------------ invalid cases

    function test_invalidVectorsFail() public {
        uint256 n = invalidCount();
        assertGe(n, 1, "invalid vectors");
        for (uint256 c = 0; c < n; c++) {
            string memory at = str(".invalid[", c, "]");
            string memory kind = vm.parseJsonString(json, string.concat(at, ".error"));
            SibylFeed.ReportHeader memory h = header(string.concat(at, ".header"));
            SibylFeed.Leaf[] memory ls = new SibylFeed.Leaf[](1);
            ls[0] = leaf(string.concat(at, ".leaf"));
            bytes32[][] memory proofs = new bytes32[][](1);
            proofs[0] = siblings(string.concat(at, ".proof"));
            SibylFeed.Signature memory s = signature(at);
            // the committee the vectors were made for (the valid cases' config digest)
            SibylFeed feed = deploy(header(".cases[0].header"));
            vm.warp(h.timestampMs / 1000 + 1);

            bytes32 k = keccak256(bytes(kind));
            if (k == keccak256("BadProof")) {
                assertFalse(feed.verifyLeaf(h.merkleRoot, ls[0], proofs[0]));
                vm.expectRevert(
                    abi.encodeWithSelector(SibylFeed.InvalidMerkleProof.selector, ls[0].feedId)
                );
            } else if (k == keccak256("BadSignature")) {
                vm.expectRevert(SibylFeed.InvalidSignature.selector);
            } else if (k == keccak256("WrongConfigDigest")) {
                vm.expectPartialRevert(SibylFeed.WrongConfigDigest.selector);
            } else if (k == keccak256("WrongVersion")) {
                vm.expectRevert(
                    abi.encodeWithSelector(SibylFeed.UnsupportedVersion.selector, h.version)
                );
            } else {
                revert(string.concat("unknown vector error kind: ", kind));
            }
            feed.submitFeeds(h, s, ls, proofs);
        }
    }
}
