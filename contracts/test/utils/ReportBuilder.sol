// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {SibylFeed} from "../../src/SibylFeed.sol";
import {FrostSigner} from "./FrostSigner.sol";

/// Builds reports the way the Rust side does (docs/PROTOCOL.md), independently of the
/// contract's own helpers: leaf/node hashes with abi.encodePacked, the tree level by level.
library ReportBuilder {
    function leafHash(SibylFeed.Leaf memory l) internal pure returns (bytes32) {
        // abi.encode of a struct of static fields = abi.encode of its fields in order.
        return keccak256(abi.encodePacked(bytes1(0x00), abi.encode(l)));
    }

    function nodeHash(bytes32 a, bytes32 b) internal pure returns (bytes32) {
        return a < b
            ? keccak256(abi.encodePacked(bytes1(0x01), a, b))
            : keccak256(abi.encodePacked(bytes1(0x01), b, a));
    }

    /// All levels, leaves first.
    function levels(SibylFeed.Leaf[] memory leaves) internal pure returns (bytes32[][] memory ls) {
        uint256 n = leaves.length;
        uint256 depth = 1;
        for (uint256 m = n; m > 1; m = (m + 1) / 2) {
            depth++;
        }
        ls = new bytes32[][](depth);
        ls[0] = new bytes32[](n);
        for (uint256 i = 0; i < n; i++) {
            ls[0][i] = leafHash(leaves[i]);
        }
        for (uint256 d = 1; d < depth; d++) {
            bytes32[] memory prev = ls[d - 1];
            bytes32[] memory next = new bytes32[]((prev.length + 1) / 2);
            for (uint256 i = 0; i < next.length; i++) {
                next[i] =
                    2 * i + 1 < prev.length ? nodeHash(prev[2 * i], prev[2 * i + 1]) : prev[2 * i];
            }
            ls[d] = next;
        }
    }

    function root(SibylFeed.Leaf[] memory leaves) internal pure returns (bytes32) {
        if (leaves.length == 0) return bytes32(0);
        bytes32[][] memory ls = levels(leaves);
        return ls[ls.length - 1][0];
    }

    /// Siblings from the leaf up; a level where the node is promoted contributes nothing.
    function proof(SibylFeed.Leaf[] memory leaves, uint256 index)
        internal
        pure
        returns (bytes32[] memory p)
    {
        bytes32[][] memory ls = levels(leaves);
        bytes32[] memory tmp = new bytes32[](ls.length);
        uint256 len;
        for (uint256 d = 0; d + 1 < ls.length; d++) {
            uint256 sib = index ^ 1;
            if (sib < ls[d].length) tmp[len++] = ls[d][sib];
            index /= 2;
        }
        p = new bytes32[](len);
        for (uint256 i = 0; i < len; i++) {
            p[i] = tmp[i];
        }
    }

    function digest(SibylFeed.ReportHeader memory h) internal pure returns (bytes32) {
        return keccak256(
            abi.encode(
                keccak256("Sibyl report v1"),
                h.version,
                h.configDigest,
                h.round,
                h.timestampMs,
                h.merkleRoot,
                h.marginRoot
            )
        );
    }

    function sign(FrostSigner.Key memory key, uint256 nonce, bytes32 message)
        internal
        returns (SibylFeed.Signature memory s)
    {
        FrostSigner.Sig memory sig = FrostSigner.sign(key, nonce, message);
        s = SibylFeed.Signature(key.x, sig.rx, sig.ry, sig.z);
    }

    /// The packed pull payload of SibylFeed.updateFeeds (docs/CONTRACTS.md, "Pull payloads"),
    /// written field by field with abi.encodePacked: no Merkle root (the margin root is sent),
    /// each leaf at its Rust widths followed by its proof's depth and siblings.
    function pullPayload(
        SibylFeed.ReportHeader memory h,
        SibylFeed.Signature memory s,
        SibylFeed.Leaf[] memory leaves,
        bytes32[][] memory proofs
    ) internal pure returns (bytes memory out) {
        out = abi.encodePacked(
            h.version,
            h.configDigest,
            h.round,
            h.timestampMs,
            h.marginRoot,
            s.groupKeyX,
            s.rx,
            s.ry,
            s.z
        );
        for (uint256 i = 0; i < leaves.length; i++) {
            out = bytes.concat(out, packedLeaf(leaves[i]), bytes1(uint8(proofs[i].length)));
            for (uint256 j = 0; j < proofs[i].length; j++) {
                out = bytes.concat(out, proofs[i][j]);
            }
        }
    }

    /// A leaf at its Rust widths, its feed id as length and ASCII bytes (120 + id length).
    function packedLeaf(SibylFeed.Leaf memory l) internal pure returns (bytes memory) {
        uint256 len = 0;
        while (len < 32 && l.feedId[len] != 0) len++;
        bytes memory id = new bytes(len);
        for (uint256 i = 0; i < len; i++) {
            id[i] = l.feedId[i];
        }
        return bytes.concat(
            abi.encodePacked(
                uint8(len),
                id,
                int128(l.price),
                uint128(l.confidence),
                l.numObservations,
                l.observedAtMs,
                int128(l.bid),
                int128(l.ask)
            ),
            abi.encodePacked(
                l.venues, l.status, l.flags, int128(l.ema), uint128(l.emaConfidence), l.volatility
            )
        );
    }

    /// A feed id as Rust encodes it: ASCII, right-padded with zeros.
    function feedId(string memory id) internal pure returns (bytes32 out) {
        bytes memory b = bytes(id);
        require(b.length > 0 && b.length <= 32, "feed id length");
        assembly {
            out := mload(add(b, 32))
        }
        // clear anything past the id (mload read 32 bytes)
        out &= bytes32(type(uint256).max << (8 * (32 - b.length)));
    }
}
