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

    /// Verifies and stores a payload from the API's `/v1/feeds/update` (`payload` field):
    /// abi.encode(header, signature, leaves, proofs) of one signed report.
    function updateFeeds(SibylFeed feed, bytes calldata payload) internal {
        feed.updateFeeds(payload);
    }

    /// The feed's latest value if it is at most `maxAge` seconds old; reverts PriceTooOld
    /// otherwise, and SibylFeed.UnknownFeed for a feed outside the registry.
    function getPriceNoOlderThan(SibylFeed feed, bytes32 feedId, uint256 maxAge)
        internal
        view
        returns (Price memory p)
    {
        (p.price, p.confidence, p.decimals, p.timestamp) = feed.latestPrice(feedId);
        if (p.timestamp == 0 || block.timestamp - p.timestamp > maxAge) {
            revert PriceTooOld(feedId, p.timestamp, maxAge);
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
