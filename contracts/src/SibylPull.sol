// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {SibylFeed} from "./SibylFeed.sol";

/// @title Pull-model consumer library for Sibyl feeds.
/// @notice For protocols that bring the price with the transaction that uses it, in the style
/// of pull oracles:
///
///   off chain:  GET /v1/feeds/update?ids=BTC-USD,ETH-USD  ->  updates[i].payload
///   on chain:   SibylPull.updateFeeds(feed, payload);                  // verify + store
///               SibylPull.Price memory p =
///                   SibylPull.getPriceNoOlderThan(feed, BTC_USD, 60);  // read, age-checked
///
/// `updateFeeds` verifies the committee's signature and the Merkle proofs; a feed that already
/// holds the same or a newer report is skipped, not reverted, so a payload that raced with
/// another update costs nothing more than its verification. The read then checks the age of
/// whatever the feed holds, the payload's value or a newer one.
library SibylPull {
    /// A feed's latest value: `price` and `confidence` (half-width) are fixed point with
    /// `decimals`; `timestamp` is the report's time in seconds, never later than the block.
    struct Price {
        int256 price;
        uint256 confidence;
        uint8 decimals;
        uint256 timestamp;
    }

    /// The feed's value is older than `maxAge` seconds (or the feed has none).
    error PriceTooOld(bytes32 feedId, uint256 timestamp, uint256 maxAge);

    /// Verifies and stores a payload from the API's `/v1/feeds/update` (`payload` field): the
    /// packed pull payload of one signed report (SibylFeed.updateFeeds documents the layout).
    /// Returns how many of the payload's feeds took its value (0: every one already held the
    /// same or a newer report).
    function updateFeeds(SibylFeed feed, bytes calldata payload) internal returns (uint256 stored) {
        // feed.updateFeeds(payload) as a bare call (the ABI encoder's copy and checks are paid
        // in every pull consumer's transaction), through updateFeeds_kxYh, the same function
        // under a selector that the feed's dispatcher finds first; a feed address without code
        // returns no data and is refused like a revert.
        bytes4 selector = SibylFeed.updateFeeds_kxYh.selector;
        assembly ("memory-safe") {
            let p := mload(0x40)
            mstore(p, selector)
            mstore(add(p, 0x04), 0x20)
            mstore(add(p, 0x24), payload.length)
            calldatacopy(add(p, 0x44), payload.offset, payload.length)
            if iszero(call(gas(), feed, 0, p, add(0x44, payload.length), 0x00, 0x20)) {
                returndatacopy(p, 0x00, returndatasize())
                revert(p, returndatasize())
            }
            if lt(returndatasize(), 0x20) { revert(0x00, 0x00) }
            stored := mload(0x00)
        }
    }

    /// The feed's latest value if it is at most `maxAge` seconds old; reverts PriceTooOld
    /// otherwise, and SibylFeed.UnknownFeed for a feed outside the registry.
    function getPriceNoOlderThan(SibylFeed feed, bytes32 feedId, uint256 maxAge)
        internal
        view
        returns (Price memory p)
    {
        // feed.latestValue(feedId) as a bare staticcall (through latestValue_htJ, the same
        // function under a selector that the feed's dispatcher finds early): this runs in
        // every pull consumer's transaction, and the ABI decoder's checks cost more than the
        // read itself.
        uint256 v;
        bytes4 selector = SibylFeed.latestValue_htJ.selector;
        assembly ("memory-safe") {
            mstore(0x00, selector)
            mstore(0x04, feedId)
            if iszero(staticcall(gas(), feed, 0x00, 0x24, 0x00, 0x20)) {
                returndatacopy(0x00, 0x00, returndatasize())
                revert(0x00, returndatasize())
            }
            if lt(returndatasize(), 0x20) { revert(0x00, 0x00) }
            v := mload(0x00)
        }
        if (v >> 248 == 0) revert SibylFeed.UnknownFeed(feedId);
        // unchecked: v >> 248 is not 0, and p.timestamp is at most block.timestamp
        unchecked {
            p.decimals = uint8((v >> 248) - 1);
            if (uint32(v >> 216) != 0) {
                p.price = int96(uint96(v));
                p.confidence = uint72(v >> 96);
                // the report's time in seconds, never later than the block
                p.timestamp = uint48(v >> 168) / 1000;
                if (p.timestamp > block.timestamp) p.timestamp = block.timestamp;
            }
            if (p.timestamp == 0 || block.timestamp - p.timestamp > maxAge) {
                revert PriceTooOld(feedId, p.timestamp, maxAge);
            }
        }
    }

    /// Several feeds at once, each at most `maxAge` seconds old (the bulk path: pair it with a
    /// payload of several feeds, `/v1/feeds/update?ids=...`).
    function getPricesNoOlderThan(SibylFeed feed, bytes32[] memory feedIds, uint256 maxAge)
        internal
        view
        returns (Price[] memory ps)
    {
        ps = new Price[](feedIds.length);
        for (uint256 i = 0; i < feedIds.length; i++) {
            ps[i] = getPriceNoOlderThan(feed, feedIds[i], maxAge);
        }
    }
}
