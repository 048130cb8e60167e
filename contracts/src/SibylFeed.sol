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
///   keccak256(0x00 || abi.encode(leaf))   (the 13 static fields of `Leaf`, 416 bytes)
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

    /// A header without its Merkle root: `submitReport` recomputes the root from the leaves,
    /// which saves sending 32 bytes of calldata on every push.
    struct ReportMeta {
        uint8 version;
        bytes32 configDigest;
        uint64 round;
        uint64 timestampMs;
    }

    /// One feed's entry in a report (docs/PROTOCOL.md, "Leaf").
    struct Leaf {
        bytes32 feedId;
        int256 price;
        uint256 confidence;
        uint16 numObservations;
        uint64 observedAtMs;
        /// Lower median of the members' best bids / asks; 0 = unknown.
        int256 bid;
        int256 ask;
        /// Venues behind the price (median over the members).
        uint16 venues;
        /// 0 ok, 1 degraded, 2 stale, 3 halted, 4 market_closed (docs/PROTOCOL.md, "Status and flags").
        uint8 status;
        /// Reasons: bit 0 few venues, 1 wide confidence, 2 peg departed, 3 out of band,
        /// 4 unconfirmed jump, 5 stale, 6 halted, 7 market closed.
        uint16 flags;
        /// Confidence-weighted EMA of the price (time constant 1 h) and its confidence.
        int256 ema;
        uint256 emaConfidence;
        /// Realised volatility, annualised, 1e9 = 100 %.
        uint64 volatility;
    }

    /// A FROST(secp256k1, Keccak-256) signature (R = (rx, ry), z) together with the x coordinate
    /// of the group key it is claimed under, so that a report signed by another committee fails
    /// with `WrongGroupKey` rather than `InvalidSignature` (the key's y parity is stored).
    struct Signature {
        uint256 groupKeyX;
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
    uint8 internal constant REPORT_VERSION = 1;
    /// keccak256("Sibyl report v1"): first word of the signed digest.
    bytes32 internal constant REPORT_DOMAIN = keccak256("Sibyl report v1");
    /// keccak256("Sibyl committee rotation v1"): first word of a rotation message.
    bytes32 internal constant ROTATION_DOMAIN = keccak256("Sibyl committee rotation v1");

    /// How far a report's timestamp may be ahead of the block's (block times have one-second
    /// granularity and lag the wall clock the committee signed with).
    uint64 public immutable maxClockDriftMs;

    /// keccak256(abi.encode(configDigest, groupKeyX)) with its lowest bit replaced by the group
    /// key's y parity: one SLOAD checks the report's committee and yields the parity.
    bytes32 internal committeeHash;
    bytes32 internal configDigest;
    uint256 internal groupKeyX;
    uint8 internal groupKeyParity;

    mapping(bytes32 feedId => FeedValue) internal _feeds;

    /// A feed took a new value. Anonymous and one word of data to keep updates cheap (LOG1:
    /// 1,006 gas): topics[0] is the feed id itself, so filter logs by feed id. `value` is the
    /// packed FeedValue: price = int96(value), confidence = uint72(value >> 96),
    /// timestampMs = uint48(value >> 168), round = uint40(value >> 216).
    event FeedUpdated(bytes32 indexed feedId, uint256 value) anonymous;
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
    error WrongGroupKey(uint256 expectedX, uint256 gotX);
    /// The FROST signature does not verify for the header digest under the committee's key.
    error InvalidSignature();
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
    /// A leaf's value (or the header's timestamp or round: feedId 0) does not fit FeedValue.
    error ValueOutOfRange(bytes32 feedId);
    /// The feed has never been updated.
    error NoDataPresent(bytes32 feedId);
    /// A rotation names a point that is not a usable secp256k1 group key.
    error InvalidGroupKey(uint256 x, uint256 y);
    /// A rotation must move to a new config digest (it is what makes the message single-use).
    error ConfigDigestUnchanged();

    constructor(
        bytes32 configDigest_,
        uint256 groupKeyX_,
        uint256 groupKeyY_,
        uint64 maxClockDriftMs_
    ) {
        maxClockDriftMs = maxClockDriftMs_;
        _setCommittee(configDigest_, groupKeyX_, groupKeyY_);
    }

    // ------------------------------------------------------------------ updates

    /// Push path: a whole report. `leaves` are all of the report's leaves in tree order
    /// (ascending feed id); the contract rebuilds the Merkle root, so neither the root nor
    /// proofs are sent. A wrong or missing leaf changes the root: `InvalidSignature`.
    function submitReport(
        ReportMeta calldata meta,
        Signature calldata signature,
        Leaf[] calldata leaves
    ) external {
        uint256 count = leaves.length;
        if (count == 0) revert NoLeaves();
        bytes32 root = _rootOf(leaves);
        _checkReport(meta, root, signature);
        (uint256 timestampMs, uint256 round) = (meta.timestampMs, meta.round);
        for (uint256 i = 0; i < count; i++) {
            _store(timestampMs, round, leaves[i]);
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
        bytes32 root = header.merkleRoot;
        ReportMeta calldata meta;
        assembly ("memory-safe") {
            meta := header // ReportMeta is ReportHeader's first four words
        }
        _checkReport(meta, root, signature);
        (uint256 timestampMs, uint256 round) = (header.timestampMs, header.round);
        for (uint256 i = 0; i < count; i++) {
            Leaf calldata leaf = leaves[i];
            if (_processProof(leafHash(leaf), proofs[i]) != root) {
                revert InvalidMerkleProof(leaf.feedId);
            }
            _store(timestampMs, round, leaf);
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
        bool keyOdd = _checkKey(current, signature.groupKeyX);
        bytes32 message = rotationDigest(current, newConfigDigest, newGroupKeyX, newGroupKeyY);
        if (!FrostSecp256k1.verify(
                signature.groupKeyX, keyOdd, message, signature.rx, signature.ry, signature.z
            )) revert InvalidSignature();
        _setCommittee(newConfigDigest, newGroupKeyX, newGroupKeyY);
    }

    // ------------------------------------------------------------------ reads

    /// The current committee: config digest and group key (x coordinate, y parity 0/1).
    function committee() external view returns (bytes32 digest, uint256 keyX, uint8 keyParity) {
        return (configDigest, groupKeyX, groupKeyParity);
    }

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

    /// Checks a report's version, committee and signature as an update does, without the
    /// clock and storage checks and without storing: reverts with the update's error,
    /// returns the signed digest. For pull consumers and off-chain tooling.
    function verifyReport(ReportHeader calldata header, Signature calldata signature)
        external
        view
        returns (bytes32 digest)
    {
        if (header.version != REPORT_VERSION) revert UnsupportedVersion(header.version);
        bool keyOdd = _checkKey(header.configDigest, signature.groupKeyX);
        digest = reportDigest(header);
        if (!FrostSecp256k1.verify(
                signature.groupKeyX, keyOdd, digest, signature.rx, signature.ry, signature.z
            )) revert InvalidSignature();
    }

    /// Whether `leaf` with `proof` (siblings from the leaf up) belongs to the tree `root`.
    function verifyLeaf(bytes32 root, Leaf calldata leaf, bytes32[] calldata proof)
        external
        pure
        returns (bool)
    {
        return _processProof(leafHash(leaf), proof) == root;
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
    function leafHash(Leaf calldata leaf) internal pure returns (bytes32 h) {
        assembly ("memory-safe") {
            let p := mload(0x40)
            mstore8(p, 0)
            calldatacopy(add(p, 1), leaf, 416)
            h := keccak256(p, 417)
        }
    }

    /// keccak256(0x01 || min(a, b) || max(a, b)).
    function nodeHash(bytes32 a, bytes32 b) internal pure returns (bytes32 h) {
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

    /// Version, clock, committee and signature checks of a report with Merkle root `root`.
    function _checkReport(ReportMeta calldata meta, bytes32 root, Signature calldata signature)
        internal
        view
    {
        if (meta.version != REPORT_VERSION) revert UnsupportedVersion(meta.version);
        uint64 timestampMs = meta.timestampMs;
        uint64 blockMs = uint64(block.timestamp) * 1000;
        if (timestampMs > blockMs + maxClockDriftMs) revert ReportFromFuture(timestampMs, blockMs);
        // FeedValue's ranges (checked once here rather than per leaf)
        if (timestampMs > type(uint48).max || meta.round > type(uint40).max) {
            revert ValueOutOfRange(bytes32(0));
        }
        bool keyOdd = _checkKey(meta.configDigest, signature.groupKeyX);
        if (!FrostSecp256k1.verify(
                signature.groupKeyX,
                keyOdd,
                _digest(meta, root),
                signature.rx,
                signature.ry,
                signature.z
            )) revert InvalidSignature();
    }

    /// reportDigest without ABI re-encoding: the meta is four static words in calldata
    /// (their canonical form is enforced where the fields are read).
    function _digest(ReportMeta calldata meta, bytes32 root) internal pure returns (bytes32 d) {
        bytes32 domain = REPORT_DOMAIN;
        assembly ("memory-safe") {
            let p := mload(0x40)
            mstore(p, domain)
            calldatacopy(add(p, 0x20), meta, 0x80)
            mstore(add(p, 0xa0), root)
            d := keccak256(p, 0xc0)
        }
    }

    /// Whether `digest` and the key with x coordinate `x` are the committee's; returns the
    /// key's y parity. One SLOAD on the happy path; more slots are read only for the error.
    function _checkKey(bytes32 digest, uint256 x) internal view returns (bool odd) {
        bytes32 claimed;
        assembly ("memory-safe") {
            mstore(0x00, digest)
            mstore(0x20, x)
            claimed := keccak256(0x00, 0x40)
        }
        bytes32 stored = committeeHash;
        if ((claimed ^ stored) >> 1 == 0) return uint256(stored) & 1 == 1;
        if (digest != configDigest) revert WrongConfigDigest(configDigest, digest);
        revert WrongGroupKey(groupKeyX, x);
    }

    /// Checks one leaf against the feed's stored value and overwrites it with one SSTORE.
    function _store(uint256 timestampMs, uint256 round, Leaf calldata leaf) internal {
        bytes32 feedId = leaf.feedId;
        int256 price = leaf.price;
        uint256 confidence = leaf.confidence;
        if (price < type(int96).min || price > type(int96).max || confidence > type(uint72).max) {
            revert ValueOutOfRange(feedId);
        }
        uint256 slot;
        uint256 stored;
        assembly ("memory-safe") {
            mstore(0x00, feedId)
            mstore(0x20, _feeds.slot)
            slot := keccak256(0x00, 0x40)
            stored := sload(slot)
        }
        // FeedValue layout, low bits first: price (96) | confidence (72) | timestampMs (48) | round (40)
        uint256 storedTimestampMs = (stored >> 168) & type(uint48).max;
        if (timestampMs <= storedTimestampMs) {
            revert StaleReport(feedId, uint64(storedTimestampMs), uint64(timestampMs));
        }
        uint256 packed = (uint256(price) & type(uint96).max) | (confidence << 96)
            | (timestampMs << 168) | (round << 216);
        assembly ("memory-safe") {
            sstore(slot, packed)
            mstore(0x00, packed)
            log1(0x00, 0x20, feedId) // FeedUpdated (anonymous)
        }
    }

    function _processProof(bytes32 h, bytes32[] calldata proof) internal pure returns (bytes32) {
        for (uint256 i = 0; i < proof.length; i++) {
            h = nodeHash(h, proof[i]);
        }
        return h;
    }

    /// Root over all leaves: pair neighbours level by level, promote an odd last node.
    /// In assembly because it runs once per pushed leaf: leaf hashes are written to free
    /// memory and reduced in place.
    function _rootOf(Leaf[] calldata leaves) internal pure returns (bytes32 root) {
        assembly ("memory-safe") {
            let n := leaves.length
            let level := mload(0x40)
            // scratch for one preimage (417 bytes) above the level array
            let scratch := add(level, shl(5, n))
            mstore8(scratch, 0)
            for { let i := 0 } lt(i, n) { i := add(i, 1) } {
                calldatacopy(add(scratch, 1), add(leaves.offset, mul(i, 0x1a0)), 0x1a0)
                mstore(add(level, shl(5, i)), keccak256(scratch, 417))
            }
            mstore8(scratch, 1)
            for {} gt(n, 1) {} {
                let next := shr(1, add(n, 1))
                for { let i := 0 } lt(i, next) { i := add(i, 1) } {
                    let j := shl(1, i)
                    let a := mload(add(level, shl(5, j)))
                    if lt(add(j, 1), n) {
                        let b := mload(add(level, shl(5, add(j, 1))))
                        if gt(a, b) {
                            let t := a
                            a := b
                            b := t
                        }
                        mstore(add(scratch, 1), a)
                        mstore(add(scratch, 33), b)
                        a := keccak256(scratch, 65)
                    }
                    mstore(add(level, shl(5, i)), a)
                }
                n := next
            }
            root := mload(level)
        }
    }

    function _setCommittee(bytes32 newConfigDigest, uint256 x, uint256 y) internal {
        if (!FrostSecp256k1.isValidKey(x, y)) revert InvalidGroupKey(x, y);
        uint8 parity = uint8(y & 1);
        emit CommitteeRotated(configDigest, newConfigDigest, x, parity);
        configDigest = newConfigDigest;
        groupKeyX = x;
        groupKeyParity = parity;
        committeeHash = (keccak256(abi.encode(newConfigDigest, x)) & ~bytes32(uint256(1)))
            | bytes32(uint256(parity));
    }
}
