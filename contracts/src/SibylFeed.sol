// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {FrostSecp256k1} from "./FrostSecp256k1.sol";

/// @title Sibyl's verifying feed contract.
/// @notice Stores the latest value of every feed that the Sibyl committee signed.
///
///   transmitter / pull consumer
///        |  header + FROST signature + leaves (+ Merkle proofs)
///        v
///   SibylFeed: signature over the header digest (one ecrecover)
///              -> each leaf proven against header.merkleRoot
///              -> per feed: newer than stored? store (price, confidence, time, round)
///        ^
///        |  latestFeed(feedId)
///   SibylAggregatorV3 (one per feed, Chainlink's AggregatorV3Interface)
///
/// Formats follow docs/PROTOCOL.md: the committee signs
///   digest = keccak256(abi.encode(keccak256("Sibyl report v1"), version, configDigest,
///                                 round, timestampMs, merkleRoot))
/// with FROST(secp256k1, Keccak-256); leaves are
///   keccak256(0x00 || abi.encode(feedId, price, confidence, numObservations, observedAtMs))
/// and inner nodes keccak256(0x01 || min(a, b) || max(a, b)), an odd last node promoted.
///
/// The committee (group key + config digest) changes only through `rotateCommittee`, with a
/// message signed by the current group key: no owner, no multisig.
contract SibylFeed {
    /// The signed part of a report (docs/PROTOCOL.md, "Header").
    struct ReportHeader {
        uint8 version;
        bytes32 configDigest;
        uint64 round;
        uint64 timestampMs;
        bytes32 merkleRoot;
    }

    /// One feed's entry in a report (docs/PROTOCOL.md, "Leaf").
    struct Leaf {
        bytes32 feedId;
        int256 price;
        uint256 confidence;
        uint16 numObservations;
        uint64 observedAtMs;
    }

    /// A FROST(secp256k1, Keccak-256) signature (R = (rx, ry), z) together with the group key
    /// it is claimed under (x coordinate and y parity 0/1), so that a report signed by another
    /// committee fails with `WrongGroupKey` rather than `InvalidSignature`.
    struct Signature {
        uint256 groupKeyX;
        uint8 groupKeyParity;
        uint256 rx;
        uint256 ry;
        uint256 z;
    }

    /// A feed's latest value, packed into one storage slot so that an update costs one SSTORE.
    /// The ranges cover any realistic feed (a price below 3.9e28 in fixed point, timestamps
    /// until year 10889, 1.1e12 rounds); a leaf outside them is refused with `ValueOutOfRange`.
    struct FeedValue {
        int96 price;
        uint72 confidence;
        /// The signed report's header timestamp (ms since the Unix epoch).
        uint48 timestampMs;
        uint40 round;
    }

    /// Protocol version this contract accepts.
    uint8 public constant REPORT_VERSION = 1;
    /// keccak256("Sibyl report v1"): first word of the signed digest.
    bytes32 public constant REPORT_DOMAIN = keccak256("Sibyl report v1");
    /// keccak256("Sibyl committee rotation v1"): first word of a rotation message.
    bytes32 public constant ROTATION_DOMAIN = keccak256("Sibyl committee rotation v1");

    /// How far a report's timestamp may be ahead of the block's (block times have one-second
    /// granularity and lag the wall clock the committee signed with).
    uint64 public immutable maxClockDriftMs;

    /// keccak256(abi.encode(configDigest, groupKeyX, groupKeyParity)): one SLOAD checks both.
    bytes32 public committeeHash;
    bytes32 public configDigest;
    uint256 public groupKeyX;
    uint8 public groupKeyParity;

    mapping(bytes32 feedId => FeedValue) internal _feeds;

    event FeedUpdated(
        bytes32 indexed feedId, uint64 round, int256 price, uint256 confidence, uint64 timestampMs
    );
    event CommitteeRotated(
        bytes32 indexed oldConfigDigest,
        bytes32 indexed newConfigDigest,
        uint256 groupKeyX,
        uint8 groupKeyParity
    );

    /// The header's version is not REPORT_VERSION.
    error UnsupportedVersion(uint8 version);
    /// The report belongs to another committee configuration.
    error WrongConfigDigest(bytes32 expected, bytes32 got);
    /// The signature claims a group key other than the committee's.
    error WrongGroupKey(uint256 expectedX, uint8 expectedParity, uint256 gotX, uint8 gotParity);
    /// The FROST signature does not verify for the header digest under the committee's key.
    error InvalidSignature();
    /// The leaves given to `submitReport` do not hash to the signed Merkle root.
    error MerkleRootMismatch(bytes32 signedRoot, bytes32 computedRoot);
    /// A leaf's Merkle proof does not lead to the signed root.
    error InvalidMerkleProof(bytes32 feedId);
    /// The feed already holds a report at least as new as this one.
    error StaleReport(bytes32 feedId, uint64 storedTimestampMs, uint64 reportTimestampMs);
    /// The report's timestamp is ahead of the block time by more than maxClockDriftMs.
    error ReportFromFuture(uint64 timestampMs, uint64 blockTimestampMs);
    /// No leaves were given.
    error NoLeaves();
    /// `submitFeeds` needs one proof per leaf.
    error ProofCountMismatch(uint256 leaves, uint256 proofs);
    /// A leaf's value does not fit FeedValue's packed ranges.
    error ValueOutOfRange(bytes32 feedId);
    /// The feed has never been updated.
    error NoDataPresent(bytes32 feedId);
    /// A rotation names a point that is not a usable secp256k1 group key.
    error InvalidGroupKey(uint256 x, uint256 y);
    /// A rotation must move to a new config digest (it is what makes the message single-use).
    error ConfigDigestUnchanged();

    constructor(bytes32 configDigest_, uint256 groupKeyX_, uint256 groupKeyY_, uint64 maxClockDriftMs_) {
        maxClockDriftMs = maxClockDriftMs_;
        _setCommittee(configDigest_, groupKeyX_, groupKeyY_);
    }

    // ------------------------------------------------------------------ updates

    /// Push path: a whole report. `leaves` are all of the report's leaves in tree order
    /// (ascending feed id); the contract rebuilds the Merkle root, so no proofs are sent.
    function submitReport(
        ReportHeader calldata header,
        Signature calldata signature,
        Leaf[] calldata leaves
    ) external {
        uint256 count = leaves.length;
        if (count == 0) revert NoLeaves();
        bytes32 root = _rootOf(leaves);
        if (root != header.merkleRoot) revert MerkleRootMismatch(header.merkleRoot, root);
        _checkHeader(header, signature);
        for (uint256 i = 0; i < count; i++) {
            _store(header, leaves[i]);
        }
    }

    /// Pull path (and partial pushes): some feeds of a report, each with its Merkle proof
    /// (sibling hashes from the leaf up, as `aggregator::merkle` produces them).
    function submitFeeds(
        ReportHeader calldata header,
        Signature calldata signature,
        Leaf[] calldata leaves,
        bytes32[][] calldata proofs
    ) external {
        uint256 count = leaves.length;
        if (count == 0) revert NoLeaves();
        if (proofs.length != count) revert ProofCountMismatch(count, proofs.length);
        _checkHeader(header, signature);
        bytes32 root = header.merkleRoot;
        for (uint256 i = 0; i < count; i++) {
            Leaf calldata leaf = leaves[i];
            if (_processProof(leafHash(leaf), proofs[i]) != root) {
                revert InvalidMerkleProof(leaf.feedId);
            }
            _store(header, leaf);
        }
    }

    /// Moves to a new committee (new group key and/or config digest). The message
    ///   keccak256(abi.encode(ROTATION_DOMAIN, currentConfigDigest, newConfigDigest,
    ///                        newGroupKeyX, newGroupKeyY))
    /// must be signed by the current group key. Because it names the current config digest
    /// and the digest must change, a rotation applies once; because it names no chain or
    /// address, one signed rotation can be relayed to every deployment of the committee.
    function rotateCommittee(
        bytes32 newConfigDigest,
        uint256 newGroupKeyX,
        uint256 newGroupKeyY,
        Signature calldata signature
    ) external {
        bytes32 current = configDigest;
        if (newConfigDigest == current) revert ConfigDigestUnchanged();
        _checkKey(current, signature);
        bytes32 message =
            rotationDigest(current, newConfigDigest, newGroupKeyX, newGroupKeyY);
        if (!FrostSecp256k1.verify(
                signature.groupKeyX,
                signature.groupKeyParity == 1,
                message,
                signature.rx,
                signature.ry,
                signature.z
            )) revert InvalidSignature();
        _setCommittee(newConfigDigest, newGroupKeyX, newGroupKeyY);
    }

    // ------------------------------------------------------------------ reads

    /// A feed's latest value; reverts with NoDataPresent if it was never updated.
    function latestFeed(bytes32 feedId)
        external
        view
        returns (int256 price, uint256 confidence, uint64 timestampMs, uint64 round)
    {
        FeedValue memory v = _feeds[feedId];
        if (v.timestampMs == 0) revert NoDataPresent(feedId);
        return (v.price, v.confidence, v.timestampMs, v.round);
    }

    /// The digest the committee signs for `header` (docs/PROTOCOL.md, "Signed digest").
    function reportDigest(ReportHeader calldata header) public pure returns (bytes32) {
        return keccak256(
            abi.encode(
                REPORT_DOMAIN,
                header.version,
                header.configDigest,
                header.round,
                header.timestampMs,
                header.merkleRoot
            )
        );
    }

    /// The message a committee signs to hand over to a new one (see rotateCommittee).
    function rotationDigest(
        bytes32 currentConfigDigest,
        bytes32 newConfigDigest,
        uint256 newGroupKeyX,
        uint256 newGroupKeyY
    ) public pure returns (bytes32) {
        return keccak256(
            abi.encode(
                ROTATION_DOMAIN, currentConfigDigest, newConfigDigest, newGroupKeyX, newGroupKeyY
            )
        );
    }

    /// keccak256(0x00 || abi.encode(leaf)).
    function leafHash(Leaf calldata leaf) public pure returns (bytes32 h) {
        assembly ("memory-safe") {
            let p := mload(0x40)
            mstore8(p, 0)
            calldatacopy(add(p, 1), leaf, 160)
            h := keccak256(p, 161)
        }
    }

    /// keccak256(0x01 || min(a, b) || max(a, b)).
    function nodeHash(bytes32 a, bytes32 b) public pure returns (bytes32 h) {
        assembly ("memory-safe") {
            let p := mload(0x40)
            if gt(a, b) {
                let t := a
                a := b
                b := t
            }
            mstore8(p, 1)
            mstore(add(p, 1), a)
            mstore(add(p, 33), b)
            h := keccak256(p, 65)
        }
    }

    // ------------------------------------------------------------------ internals

    function _checkHeader(ReportHeader calldata header, Signature calldata signature) internal view {
        if (header.version != REPORT_VERSION) revert UnsupportedVersion(header.version);
        uint64 blockMs = uint64(block.timestamp) * 1000;
        if (header.timestampMs > blockMs + maxClockDriftMs) {
            revert ReportFromFuture(header.timestampMs, blockMs);
        }
        _checkKey(header.configDigest, signature);
        if (!FrostSecp256k1.verify(
                signature.groupKeyX,
                signature.groupKeyParity == 1,
                reportDigest(header),
                signature.rx,
                signature.ry,
                signature.z
            )) revert InvalidSignature();
    }

    /// One SLOAD on the happy path; the slots read for a precise error only on failure.
    function _checkKey(bytes32 digest, Signature calldata signature) internal view {
        bytes32 claimed =
            keccak256(abi.encode(digest, signature.groupKeyX, signature.groupKeyParity));
        if (claimed == committeeHash) return;
        if (digest != configDigest) revert WrongConfigDigest(configDigest, digest);
        revert WrongGroupKey(
            groupKeyX, groupKeyParity, signature.groupKeyX, signature.groupKeyParity
        );
    }

    function _store(ReportHeader calldata header, Leaf calldata leaf) internal {
        bytes32 feedId = leaf.feedId;
        int256 price = leaf.price;
        uint256 confidence = leaf.confidence;
        uint64 timestampMs = header.timestampMs;
        uint64 round = header.round;
        if (
            price < type(int96).min || price > type(int96).max
                || confidence > type(uint72).max || timestampMs > type(uint48).max
                || round > type(uint40).max
        ) revert ValueOutOfRange(feedId);
        FeedValue storage slot = _feeds[feedId];
        uint48 stored = slot.timestampMs;
        if (timestampMs <= stored) revert StaleReport(feedId, stored, timestampMs);
        _feeds[feedId] = FeedValue({
            price: int96(price),
            confidence: uint72(confidence),
            timestampMs: uint48(timestampMs),
            round: uint40(round)
        });
        emit FeedUpdated(feedId, round, price, confidence, timestampMs);
    }

    function _processProof(bytes32 h, bytes32[] calldata proof) internal pure returns (bytes32) {
        for (uint256 i = 0; i < proof.length; i++) {
            h = nodeHash(h, proof[i]);
        }
        return h;
    }

    /// Root over all leaves: pair neighbours level by level, promote an odd last node.
    function _rootOf(Leaf[] calldata leaves) internal pure returns (bytes32) {
        uint256 n = leaves.length;
        bytes32[] memory level = new bytes32[](n);
        for (uint256 i = 0; i < n; i++) {
            level[i] = leafHash(leaves[i]);
        }
        while (n > 1) {
            uint256 next = (n + 1) / 2;
            for (uint256 i = 0; i < next; i++) {
                uint256 j = 2 * i;
                level[i] = j + 1 < n ? nodeHash(level[j], level[j + 1]) : level[j];
            }
            n = next;
        }
        return level[0];
    }

    function _setCommittee(bytes32 newConfigDigest, uint256 x, uint256 y) internal {
        if (!FrostSecp256k1.isValidKey(x, y)) revert InvalidGroupKey(x, y);
        uint8 parity = uint8(y & 1);
        emit CommitteeRotated(configDigest, newConfigDigest, x, parity);
        configDigest = newConfigDigest;
        groupKeyX = x;
        groupKeyParity = parity;
        committeeHash = keccak256(abi.encode(newConfigDigest, x, parity));
    }
}
