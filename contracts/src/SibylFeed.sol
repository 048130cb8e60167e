// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {FrostSecp256k1} from "./FrostSecp256k1.sol";

/// @title Sibyl's verifying feed contract.
/// @notice Verifies the Sibyl committee's signed reports and keeps, per feed, the last
/// `historySize` values with Chainlink-style round ids.
///
///   transmitter / pull consumer
///        |  header + FROST signature + leaves (+ Merkle proofs)
///        v
///   SibylFeed: signature over the header digest (one ecrecover)
///              -> each leaf proven against header.merkleRoot
///              -> per feed: registered, in range, round and timestamp both newer?
///                 yes: round id + 1, value into the ring;  no: FeedSkipped, next leaf
///        ^
///        |  latestRoundData(feedId) / getRoundData(feedId, roundId) / latestFeed(feedId)
///   SibylAggregatorV3 (one per feed: AggregatorV2V3Interface) / SibylPull (pull consumers)
///
/// Formats follow docs/PROTOCOL.md: the committee signs
///   digest = keccak256(abi.encode(keccak256("Sibyl report v1"), version, configDigest,
///                                 round, timestampMs, merkleRoot, marginRoot))
/// with FROST(secp256k1, Keccak-256) (marginRoot commits to the round's margin commands, which
/// this contract does not read: it only checks that the signature covers it); leaves are
///   keccak256(0x00 || abi.encode(leaf))   (the 13 static fields of `Leaf`, 416 bytes)
/// and inner nodes keccak256(0x01 || min(a, b) || max(a, b)), an odd last node promoted.
///
/// The committee (group key + config digest) and the feed registry (each feed's decimals)
/// change only through `rotateCommittee`, signed by the current group key and by the new one
/// (proof of possession): no owner, no multisig. The deployer sets the first committee and
/// registry, as it chooses the first group key.
contract SibylFeed {
    /// The signed part of a report (docs/PROTOCOL.md, "Header").
    struct ReportHeader {
        uint8 version;
        bytes32 configDigest;
        uint64 round;
        uint64 timestampMs;
        bytes32 merkleRoot;
        /// Commitment to the round's margin commands (docs/PROTOCOL.md, "Margin root"); zero
        /// when the round orders none. Opaque here: it is only part of the signed digest.
        bytes32 marginRoot;
    }

    /// A header without its Merkle root: `submitReport` recomputes the root from the leaves,
    /// which saves sending 32 bytes of calldata on every push.
    struct ReportMeta {
        uint8 version;
        bytes32 configDigest;
        uint64 round;
        uint64 timestampMs;
        bytes32 marginRoot;
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

    /// One stored value, one slot (low bits first):
    ///   price int96 | confidence uint72 | timestampMs uint48 (the report's header timestamp)
    ///   | roundId uint32 (per feed: 1 at the first stored value, +1 per stored value)
    ///   | decimals + 1 uint8 (the registry; 0: the feed is not registered)
    /// Each feed has two such slots, `_values[feedId][roundId % 2]`, holding its latest and
    /// previous values (HISTORY_SIZE = 2). An update reads both (the one with the higher round
    /// id is the latest) and overwrites the older: two cold SLOADs and one SSTORE, no head
    /// slot to keep. Registration writes slot 0 with round id 0 and the decimals.
    mapping(bytes32 feedId => uint256[2]) internal _values;

    /// Values kept per feed: `getRoundData` answers the latest round id and the one before.
    uint256 public constant historySize = 2;
    /// Where the leaves of a packed pull payload start (updateFeeds): header 81 bytes,
    /// signature 128.
    uint256 internal constant PULL_LEAVES_AT = 209;
    /// Protocol version this contract accepts.
    uint8 internal constant REPORT_VERSION = 2;
    /// keccak256("Sibyl report v1"): first word of the signed digest.
    bytes32 internal constant REPORT_DOMAIN = keccak256("Sibyl report v1");
    /// keccak256("Sibyl committee rotation v2"): first word of a rotation message.
    bytes32 internal constant ROTATION_DOMAIN = keccak256("Sibyl committee rotation v2");

    /// The most decimals a feed may have: with 18 a price up to 3.9e10 units and a confidence
    /// up to 4,722 units fit (`sibyl config check` holds each feed's range to this too).
    uint8 public constant MAX_DECIMALS = 18;

    /// Why a leaf was skipped (`FeedSkipped.reason`).
    uint8 public constant SKIP_STALE = 1;
    uint8 public constant SKIP_OUT_OF_RANGE = 2;
    uint8 public constant SKIP_UNKNOWN_FEED = 3;

    /// How far a report's timestamp may be ahead of the block's (block times have one-second
    /// granularity and lag the wall clock the committee signed with). Reads never show a time
    /// later than the block that stored the value.
    uint64 public immutable maxClockDriftMs;

    /// keccak256(abi.encode(configDigest, groupKeyX)) with its lowest bit replaced by the group
    /// key's y parity: one SLOAD checks the report's committee and yields the parity.
    bytes32 internal committeeHash;
    bytes32 internal configDigest;
    uint256 internal groupKeyX;
    uint8 internal groupKeyParity;
    /// Rotations so far; the next rotation message must name it.
    uint32 public rotationCount;

    /// A feed took a new value. Anonymous and one word of data to keep updates cheap (LOG1:
    /// 1,006 gas): topics[0] is the feed id itself, so filter logs by feed id. `value` is the
    /// stored value: price = int96(value), confidence = uint72(value >> 96),
    /// timestampMs = uint48(value >> 168), roundId = uint32(value >> 216).
    event FeedUpdated(bytes32 indexed feedId, uint256 value) anonymous;
    /// A leaf of a correctly signed report was not stored: `reason` is SKIP_STALE (the feed
    /// holds a report at least as new), SKIP_OUT_OF_RANGE (price or confidence does not fit
    /// the stored value) or SKIP_UNKNOWN_FEED (not in the registry).
    event FeedSkipped(bytes32 indexed feedId, uint8 reason);
    event CommitteeRotated(
        bytes32 indexed oldConfigDigest,
        bytes32 indexed newConfigDigest,
        uint256 groupKeyX,
        uint8 groupKeyParity
    );
    /// A feed entered the registry.
    event FeedRegistered(bytes32 indexed feedId, uint8 decimals);

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
    /// The report's timestamp is ahead of the block time by more than maxClockDriftMs.
    error ReportFromFuture(uint64 timestampMs, uint64 blockTimestampMs);
    /// No leaves were given.
    error NoLeaves();
    /// `submitFeeds` needs one proof per leaf.
    error ProofCountMismatch(uint256 leaves, uint256 proofs);
    /// The header's timestamp does not fit 48 bits (feedId 0: the header).
    error ValueOutOfRange(bytes32 feedId);
    /// The feed has no stored value.
    error NoDataPresent(bytes32 feedId);
    /// The feed is not in the registry.
    error UnknownFeed(bytes32 feedId);
    /// A rotation lists a registered feed with other decimals: a feed's decimals never change
    /// (give the feed a new id instead), so adapters cannot silently rescale.
    error DecimalsChanged(bytes32 feedId, uint8 registered, uint8 given);
    /// Feed ids and decimals must pair up; decimals must be at most 18.
    error BadRegistry();
    /// A rotation names a point that is not a usable secp256k1 group key.
    error InvalidGroupKey(uint256 x, uint256 y);
    /// A rotation must move to a new config digest.
    error ConfigDigestUnchanged();
    /// The new committee's signature (proof of possession) is not over the rotation message by
    /// the new group key.
    error NewKeyNotProven();
    /// `payload` of updateFeeds is not a packed pull payload: shorter or longer than its
    /// depths say.
    error MalformedPayload();

    constructor(
        bytes32 configDigest_,
        uint256 groupKeyX_,
        uint256 groupKeyY_,
        uint64 maxClockDriftMs_,
        bytes32[] memory feedIds,
        uint8[] memory decimals
    ) {
        maxClockDriftMs = maxClockDriftMs_;
        _setCommittee(configDigest_, groupKeyX_, groupKeyY_, 0);
        _register(feedIds, decimals);
    }

    // ------------------------------------------------------------------ updates

    /// Push path: a whole report. `leaves` are all of the report's leaves in tree order
    /// (ascending feed id); the contract rebuilds the Merkle root, so neither the root nor
    /// proofs are sent. A wrong or missing leaf changes the root: `InvalidSignature`.
    /// A leaf that is stale, out of range or unregistered is skipped (FeedSkipped); the
    /// others are stored, so a race on one feed never voids the rest.
    function submitReport(
        ReportMeta calldata meta,
        Signature calldata signature,
        Leaf[] calldata leaves
    ) external {
        uint256 count = leaves.length;
        if (count == 0) revert NoLeaves();
        bytes32 root = _rootOf(leaves);
        uint64 timestampMs = meta.timestampMs;
        _checkReport(
            meta.version, meta.configDigest, timestampMs, _metaDigest(meta, root), signature
        );
        for (uint256 i = 0; i < count; i++) {
            Leaf calldata leaf = leaves[i];
            _store(timestampMs, leaf.feedId, leaf.price, leaf.confidence);
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
        _submitFeeds(header, signature, leaves, proofs);
    }

    /// Pull path with one opaque argument, as pull-oracle integrations expect. `payload` is the
    /// packed pull payload (docs/CONTRACTS.md, "Pull payloads"; the API's `/v1/feeds/update`
    /// returns it as `payload`), big-endian, no padding:
    ///
    ///   version u8 | configDigest bytes32 | round u64 | timestampMs u64
    ///   | marginRoot bytes32                                                   (81 bytes)
    ///   | groupKeyX | rx | ry | z (uint256 each: the Signature struct)         (128 bytes)
    ///   | one or more ( leaf | depth u8 | depth x sibling bytes32 ), to the end
    ///
    /// with a leaf packed at its Rust widths (int128/uint128 values), its feed id as its ASCII
    /// bytes after their length (1 to 32; the id's bytes32 is those bytes, zero-padded):
    ///   idLength u8 | id | price int128 | confidence uint128 | numObservations u16
    ///   | observedAtMs u64 | bid int128 | ask int128 | venues u16 | status u8 | flags u16
    ///   | ema int128 | emaConfidence uint128 | volatility u64
    ///
    /// No Merkle root is sent: each leaf's proof yields it, all must agree, and the signature
    /// over the digest with that root proves the lot. Half the calldata of `submitFeeds`
    /// (test/Gas.t.sol measures both). Every byte is read: a payload that is shorter or
    /// longer than its depths say reverts MalformedPayload. Returns how many of the payload's
    /// feeds took its value (the others were skipped: FeedSkipped says why).
    function updateFeeds(bytes calldata payload) external returns (uint256 stored) {
        return _updateFeeds(payload);
    }

    /// `updateFeeds` under a selector the dispatcher tests first (0x000000be): the compiler
    /// tests the selectors one by one in ascending order, and updateFeeds' (0xaf53fc73) comes
    /// 15th, about 300 gas into every pull transaction. SibylPull calls this one.
    function updateFeeds_kxYh(bytes calldata payload) external returns (uint256 stored) {
        return _updateFeeds(payload);
    }

    function _updateFeeds(bytes calldata payload) internal returns (uint256 stored) {
        uint256 start;
        uint256 end;
        assembly ("memory-safe") {
            start := payload.offset
            end := add(start, payload.length)
        }
        if (payload.length < PULL_LEAVES_AT) revert MalformedPayload();
        if (payload.length == PULL_LEAVES_AT) revert NoLeaves();
        uint64 timestampMs;
        assembly ("memory-safe") {
            timestampMs := shr(192, calldataload(add(start, 41)))
        }
        // One pass: each leaf's proof must lead to the first leaf's root; each leaf is stored
        // as it comes. The signature over that root is checked after the loop: if it fails,
        // the revert undoes every store (cheaper than walking the leaves twice).
        // _packedLeaf reverts unless next <= end, so the loop ends exactly at `end`: every
        // byte is read.
        (bytes32 root, bytes32 feedId, int256 price, uint256 confidence, uint256 at) =
            _packedLeaf(start + PULL_LEAVES_AT, end);
        while (true) {
            if (_store(timestampMs, feedId, price, confidence)) {
                unchecked {
                    ++stored;
                }
            }
            if (at >= end) break;
            bytes32 r;
            (r, feedId, price, confidence, at) = _packedLeaf(at, end);
            if (r != root) revert InvalidMerkleProof(feedId);
        }
        // The header, then the signature over it with that root.
        uint8 version;
        bytes32 digestOfConfig;
        bytes32 digest;
        Signature calldata signature;
        bytes32 domain = REPORT_DOMAIN;
        assembly ("memory-safe") {
            version := shr(248, calldataload(start))
            digestOfConfig := calldataload(add(start, 1))
            let p := mload(0x40)
            mstore(p, domain)
            mstore(add(p, 0x20), version)
            mstore(add(p, 0x40), digestOfConfig)
            mstore(add(p, 0x60), shr(192, calldataload(add(start, 33))))
            mstore(add(p, 0x80), timestampMs)
            mstore(add(p, 0xa0), root)
            mstore(add(p, 0xc0), calldataload(add(start, 49))) // marginRoot
            digest := keccak256(p, 0xe0)
            signature := add(start, 81)
        }
        _checkReport(version, digestOfConfig, timestampMs, digest, signature);
    }

    /// Hands the contract over to a new committee and registers the new committee file's
    /// feeds. Both the current group key (`signature`) and the new one (`newKeySignature`,
    /// proof that the new committee holds its key) sign
    ///   rotationDigest(block.chainid, address(this), rotationCount, currentConfigDigest,
    ///                  newConfigDigest, newGroupKeyX, newGroupKeyY, feedIds, decimals)
    /// so a hand-over applies to one chain, one contract and one point in its history.
    /// Feeds already registered must keep their decimals; new ones are added.
    function rotateCommittee(
        bytes32 newConfigDigest,
        uint256 newGroupKeyX,
        uint256 newGroupKeyY,
        bytes32[] calldata feedIds,
        uint8[] calldata decimals,
        Signature calldata signature,
        Signature calldata newKeySignature
    ) external {
        bytes32 current = configDigest;
        if (newConfigDigest == current) revert ConfigDigestUnchanged();
        bool keyOdd = _checkKey(current, signature.groupKeyX);
        uint256 epoch = rotationCount;
        bytes32 message = rotationDigest(
            block.chainid,
            address(this),
            epoch,
            current,
            newConfigDigest,
            newGroupKeyX,
            newGroupKeyY,
            feedIds,
            decimals
        );
        if (!FrostSecp256k1.verify(
                signature.groupKeyX, keyOdd, message, signature.rx, signature.ry, signature.z
            )) revert InvalidSignature();
        if (!FrostSecp256k1.isValidKey(newGroupKeyX, newGroupKeyY)) {
            revert InvalidGroupKey(newGroupKeyX, newGroupKeyY);
        }
        if (
            newKeySignature.groupKeyX != newGroupKeyX
                || !FrostSecp256k1.verify(
                    newGroupKeyX,
                    newGroupKeyY & 1 == 1,
                    message,
                    newKeySignature.rx,
                    newKeySignature.ry,
                    newKeySignature.z
                )
        ) revert NewKeyNotProven();
        _setCommittee(newConfigDigest, newGroupKeyX, newGroupKeyY, epoch + 1);
        _register(feedIds, decimals);
    }

    // ------------------------------------------------------------------ reads

    /// The current committee: config digest and group key (x coordinate, y parity 0/1).
    function committee() external view returns (bytes32 digest, uint256 keyX, uint8 keyParity) {
        return (configDigest, groupKeyX, groupKeyParity);
    }

    /// A feed's latest value: price, confidence, the report's signed timestamp (ms) and the
    /// feed's round id. Reverts NoDataPresent before the first value. (The transmitter
    /// compares reports with it.)
    function latestFeed(bytes32 feedId)
        external
        view
        returns (int256 price, uint256 confidence, uint64 timestampMs, uint64 roundId)
    {
        uint256 v = _latest(feedId);
        if (uint32(v >> 216) == 0) revert NoDataPresent(feedId);
        return (int96(uint96(v)), uint72(v >> 96), uint48(v >> 168), uint32(v >> 216));
    }

    /// The feed's latest price, confidence, decimals and updatedAt (seconds, never later than
    /// the block); all but decimals are 0 before the first value. Reverts UnknownFeed for a feed
    /// outside the registry. One call for pull consumers (SibylPull).
    function latestPrice(bytes32 feedId)
        external
        view
        returns (int256 price, uint256 confidence, uint8 decimals, uint256 updatedAt)
    {
        uint256 v = _latest(feedId);
        if (v >> 248 == 0) revert UnknownFeed(feedId);
        decimals = uint8((v >> 248) - 1);
        if (uint32(v >> 216) == 0) return (0, 0, decimals, 0);
        return (int96(uint96(v)), uint72(v >> 96), decimals, _updatedAt(v));
    }

    /// The feed's latest stored value as one word, laid out as `FeedUpdated`'s `value`:
    /// price = int96(v), confidence = uint72(v >> 96), timestampMs = uint48(v >> 168),
    /// roundId = uint32(v >> 216) (0: no value yet), decimals + 1 = v >> 248 (0: the feed is
    /// not registered). The cheapest read for another contract (SibylPull decodes it).
    function latestValue(bytes32 feedId) external view returns (uint256) {
        return _latest(feedId);
    }

    /// `latestValue` under a selector the dispatcher tests second (0x00001b26; latestValue's,
    /// 0x6838444b, comes 12th): SibylPull reads through this one.
    function latestValue_htJ(bytes32 feedId) external view returns (uint256) {
        return _latest(feedId);
    }

    /// The feed's decimals and latest round id (0 before the first value); reverts UnknownFeed
    /// for a feed outside the registry.
    function feedInfo(bytes32 feedId) public view returns (uint8 decimals, uint80 latestRound) {
        uint256 v = _latest(feedId);
        if (v >> 248 == 0) revert UnknownFeed(feedId);
        return (uint8((v >> 248) - 1), uint80(uint32(v >> 216)));
    }

    /// Chainlink's latestRoundData for one feed: roundId = answeredInRound = the feed's round
    /// id, startedAt = updatedAt = the report's timestamp in seconds, or block.timestamp if that
    /// is earlier (a report may be up to maxClockDriftMs ahead of the block). Reverts
    /// NoDataPresent before the first value.
    function latestRoundData(bytes32 feedId)
        external
        view
        returns (uint80, int256, uint256, uint256, uint80)
    {
        uint256 v = _latest(feedId);
        uint80 roundId = uint32(v >> 216);
        if (roundId == 0) revert NoDataPresent(feedId);
        uint256 updatedAt = _updatedAt(v);
        return (roundId, int96(uint96(v)), updatedAt, updatedAt, roundId);
    }

    /// Chainlink's getRoundData for one feed, for its latest round id and the one before. A
    /// round id that is not held (0, not reached yet, or overwritten) returns found = false and
    /// zeros: the adapter turns that into Chainlink's behaviour.
    function getRoundData(bytes32 feedId, uint80 roundId)
        external
        view
        returns (bool found, int256 answer, uint256 confidence, uint256 updatedAt)
    {
        if (roundId == 0) return (false, 0, 0, 0);
        uint256 v = _values[feedId][roundId % 2];
        if (uint32(v >> 216) != roundId) return (false, 0, 0, 0);
        return (true, int96(uint96(v)), uint72(v >> 96), _updatedAt(v));
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
                header.merkleRoot,
                header.marginRoot
            )
        );
    }

    /// The message both committees sign to hand over (see rotateCommittee):
    ///   keccak256(abi.encode(keccak256("Sibyl committee rotation v2"), chainId, contract,
    ///             rotationCount, currentConfigDigest, newConfigDigest, newGroupKeyX,
    ///             newGroupKeyY, keccak256(abi.encode(feedIds, decimals))))
    function rotationDigest(
        uint256 chainId,
        address feedContract,
        uint256 rotationIndex,
        bytes32 currentConfigDigest,
        bytes32 newConfigDigest,
        uint256 newGroupKeyX,
        uint256 newGroupKeyY,
        bytes32[] calldata feedIds,
        uint8[] calldata decimals
    ) public pure returns (bytes32) {
        return keccak256(
            abi.encode(
                ROTATION_DOMAIN,
                chainId,
                feedContract,
                rotationIndex,
                currentConfigDigest,
                newConfigDigest,
                newGroupKeyX,
                newGroupKeyY,
                keccak256(abi.encode(feedIds, decimals))
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

    function _submitFeeds(
        ReportHeader calldata header,
        Signature calldata signature,
        Leaf[] calldata leaves,
        bytes32[][] calldata proofs
    ) internal {
        uint256 count = leaves.length;
        if (count == 0) revert NoLeaves();
        if (proofs.length != count) revert ProofCountMismatch(count, proofs.length);
        bytes32 root = header.merkleRoot;
        uint64 timestampMs = header.timestampMs;
        _checkReport(
            header.version, header.configDigest, timestampMs, _headerDigest(header), signature
        );
        for (uint256 i = 0; i < count; i++) {
            Leaf calldata leaf = leaves[i];
            if (_processProof(leafHash(leaf), proofs[i]) != root) {
                revert InvalidMerkleProof(leaf.feedId);
            }
            _store(timestampMs, leaf.feedId, leaf.price, leaf.confidence);
        }
    }

    /// Version, clock, committee and signature checks of a report whose signed digest is
    /// `digest` (built from the report's own version, config digest and timestamp).
    function _checkReport(
        uint8 version,
        bytes32 digestOfConfig,
        uint64 timestampMs,
        bytes32 digest,
        Signature calldata signature
    ) internal view {
        if (version != REPORT_VERSION) revert UnsupportedVersion(version);
        uint256 blockMs;
        unchecked {
            // in 256 bits neither can overflow (block.timestamp is a uint64 in practice)
            blockMs = block.timestamp * 1000;
            if (timestampMs > blockMs + maxClockDriftMs) {
                revert ReportFromFuture(timestampMs, uint64(blockMs));
            }
        }
        if (timestampMs > type(uint48).max) revert ValueOutOfRange(bytes32(0));
        bool keyOdd = _checkKey(digestOfConfig, signature.groupKeyX);
        if (!FrostSecp256k1.verify(
                signature.groupKeyX, keyOdd, digest, signature.rx, signature.ry, signature.z
            )) revert InvalidSignature();
    }

    /// A packed pull leaf at calldata `at` (docs in updateFeeds): the Merkle root its proof
    /// leads to, its feed id, price and confidence, and where the next leaf starts. Reverts
    /// MalformedPayload if an id is longer than 32 bytes or leaf or proof runs past `end`.
    function _packedLeaf(uint256 at, uint256 end)
        internal
        pure
        returns (bytes32 h, bytes32 feedId, int256 price, uint256 confidence, uint256 next)
    {
        bool bad;
        uint256 q;
        assembly ("memory-safe") {
            let len := byte(0, calldataload(at))
            q := add(add(at, 1), len)
            next := add(q, 120)
            bad := or(gt(len, 32), gt(next, end))
            next := add(next, shl(5, byte(0, calldataload(add(q, 119)))))
            bad := or(bad, gt(next, end))
            // the id's bytes, zero past its length (shl by 256 when len = 0 yields 0)
            feedId := and(calldataload(add(at, 1)), shl(sub(256, shl(3, len)), not(0)))
        }
        if (bad) revert MalformedPayload();
        assembly ("memory-safe") {
            price := sar(128, calldataload(q))
            confidence := shr(128, calldataload(add(q, 16)))
            // The leaf as abi.encode(Leaf) (13 words) after a 0x00 byte, then its hash.
            let p := mload(0x40)
            mstore8(p, 0)
            let w := add(p, 1)
            mstore(w, feedId)
            mstore(add(w, 0x20), price)
            mstore(add(w, 0x40), confidence)
            mstore(add(w, 0x60), shr(240, calldataload(add(q, 32)))) // numObservations
            mstore(add(w, 0x80), shr(192, calldataload(add(q, 34)))) // observedAtMs
            mstore(add(w, 0xa0), sar(128, calldataload(add(q, 42)))) // bid
            mstore(add(w, 0xc0), sar(128, calldataload(add(q, 58)))) // ask
            mstore(add(w, 0xe0), shr(240, calldataload(add(q, 74)))) // venues
            mstore(add(w, 0x100), shr(248, calldataload(add(q, 76)))) // status
            mstore(add(w, 0x120), shr(240, calldataload(add(q, 77)))) // flags
            mstore(add(w, 0x140), sar(128, calldataload(add(q, 79)))) // ema
            mstore(add(w, 0x160), shr(128, calldataload(add(q, 95)))) // emaConfidence
            mstore(add(w, 0x180), shr(192, calldataload(add(q, 111)))) // volatility
            h := keccak256(p, 417)
            // Up the tree: keccak256(0x01 || min || max), branch-free.
            let s := add(q, 120)
            if lt(s, next) {
                mstore8(p, 1)
                let b := add(w, 0x20)
                for {} 1 {} {
                    let sib := calldataload(s)
                    let swap := mul(xor(h, sib), gt(h, sib))
                    mstore(w, xor(h, swap))
                    mstore(b, xor(sib, swap))
                    h := keccak256(p, 65)
                    s := add(s, 32)
                    if iszero(lt(s, next)) { break }
                }
            }
        }
    }

    /// reportDigest without ABI re-encoding: the header is six static words in calldata, in
    /// the digest's order (the canonical form of version, round and timestamp is enforced where
    /// the fields are read; the roots are bytes32, any value is canonical).
    function _headerDigest(ReportHeader calldata header) internal pure returns (bytes32 d) {
        bytes32 domain = REPORT_DOMAIN;
        assembly ("memory-safe") {
            let p := mload(0x40)
            mstore(p, domain)
            calldatacopy(add(p, 0x20), header, 0xc0)
            d := keccak256(p, 0xe0)
        }
    }

    /// The same for a push: the meta's first four words, the recomputed Merkle root, then the
    /// meta's marginRoot (its fifth word).
    function _metaDigest(ReportMeta calldata meta, bytes32 root) internal pure returns (bytes32 d) {
        bytes32 domain = REPORT_DOMAIN;
        assembly ("memory-safe") {
            let p := mload(0x40)
            mstore(p, domain)
            calldatacopy(add(p, 0x20), meta, 0x80)
            mstore(add(p, 0xa0), root)
            mstore(add(p, 0xc0), calldataload(add(meta, 0x80)))
            d := keccak256(p, 0xe0)
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

    /// The feed's latest value (of its two slots, the one with the higher round id).
    function _latest(bytes32 feedId) internal view returns (uint256) {
        uint256[2] storage pair = _values[feedId];
        (uint256 a, uint256 b) = (pair[0], pair[1]);
        return uint32(b >> 216) > uint32(a >> 216) ? b : a;
    }

    /// updatedAt in seconds: the report's timestamp, never later than the current block.
    function _updatedAt(uint256 v) internal view returns (uint256 updatedAt) {
        updatedAt = uint48(v >> 168) / 1000;
        if (updatedAt > block.timestamp) updatedAt = block.timestamp;
    }

    /// Stores one leaf as the feed's next round id, or skips it with FeedSkipped: the feed
    /// must be registered, the value must fit, and the report's timestamp must be later than
    /// the feed's latest value's. (Members sign only reports whose timestamp is later than the
    /// previous report's, so within a committee a later timestamp is a later round.)
    function _store(uint256 timestampMs, bytes32 feedId, int256 price, uint256 confidence)
        internal
        returns (bool stored)
    {
        // In assembly because it runs once per leaf: the checks below compile to a few
        // comparisons instead of a branch each.
        uint256 reason;
        assembly ("memory-safe") {
            mstore(0x00, feedId)
            mstore(0x20, _values.slot)
            let base := keccak256(0x00, 0x40)
            let latest := sload(base)
            let b := sload(add(base, 1))
            // the latest of the two values: the higher round id (bits 216..247)
            if gt(and(shr(216, b), 0xffffffff), and(shr(216, latest), 0xffffffff)) {
                latest := b
            }
            let tag := shr(248, latest) // decimals + 1; 0: not registered
            let later := gt(timestampMs, and(shr(168, latest), 0xffffffffffff))
            // round id + 1: at most 2^32, checked below
            let roundId := add(and(shr(216, latest), 0xffffffff), 1)
            // price must fit int96, confidence uint72, the round id uint32
            let fits :=
                iszero(
                    or(
                        or(iszero(eq(signextend(11, price), price)), shr(72, confidence)),
                        shr(32, roundId)
                    )
                )
            switch and(and(iszero(iszero(tag)), later), fits)
            case 0 {
                reason := 2 // SKIP_OUT_OF_RANGE
                if iszero(later) { reason := 1 } // SKIP_STALE: not later than the latest value
                if iszero(tag) { reason := 3 } // SKIP_UNKNOWN_FEED
            }
            default {
                let packed :=
                    or(
                        or(and(price, 0xffffffffffffffffffffffff), shl(96, confidence)),
                        or(or(shl(168, timestampMs), shl(216, roundId)), shl(248, tag))
                    )
                sstore(add(base, and(roundId, 1)), packed)
                stored := 1
                mstore(0x00, packed)
                log1(0x00, 0x20, feedId) // FeedUpdated (anonymous)
            }
        }
        if (reason != 0) _skip(feedId, uint8(reason));
    }

    function _skip(bytes32 feedId, uint8 reason) internal returns (bool) {
        emit FeedSkipped(feedId, reason);
        return false;
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

    function _setCommittee(bytes32 newConfigDigest, uint256 x, uint256 y, uint256 epoch) internal {
        if (!FrostSecp256k1.isValidKey(x, y)) revert InvalidGroupKey(x, y);
        uint8 parity = uint8(y & 1);
        emit CommitteeRotated(configDigest, newConfigDigest, x, parity);
        configDigest = newConfigDigest;
        groupKeyX = x;
        groupKeyParity = parity;
        rotationCount = uint32(epoch);
        committeeHash = (keccak256(abi.encode(newConfigDigest, x)) & ~bytes32(uint256(1)))
            | bytes32(uint256(parity));
    }

    /// Adds feeds to the registry; a registered feed keeps its decimals.
    function _register(bytes32[] memory feedIds, uint8[] memory decimals) internal {
        if (feedIds.length != decimals.length) revert BadRegistry();
        for (uint256 i = 0; i < feedIds.length; i++) {
            bytes32 id = feedIds[i];
            uint8 d = decimals[i];
            if (d > MAX_DECIMALS) revert BadRegistry();
            uint256 tag = _latest(id) >> 248;
            if (tag != 0) {
                if (tag - 1 != d) revert DecimalsChanged(id, uint8(tag - 1), d);
                continue;
            }
            _values[id][0] = (uint256(d) + 1) << 248;
            emit FeedRegistered(id, d);
        }
    }
}
