// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {SibylFeed} from "../../src/SibylFeed.sol";
import {SibylPull} from "../../src/SibylPull.sol";

/// A protocol that brings its price with the call, through the SibylPull library only.
contract PullConsumer {
    SibylFeed public immutable feed;

    constructor(SibylFeed feed_) {
        feed = feed_;
    }

    /// Update from the API's payload, then read one price at most a minute old.
    function settle(bytes calldata payload, bytes32 feedId) external returns (int256) {
        SibylPull.updateFeeds(feed, payload);
        return SibylPull.getPriceNoOlderThan(feed, feedId, 60).price;
    }

    /// The bulk path: one payload with several feeds, then all of their prices.
    function settleMany(bytes calldata payload, bytes32[] calldata feedIds)
        external
        returns (SibylPull.Price[] memory)
    {
        SibylPull.updateFeeds(feed, payload);
        return SibylPull.getPricesNoOlderThan(feed, feedIds, 60);
    }

    function read(bytes32 feedId, uint256 maxAge) external view returns (SibylPull.Price memory) {
        return SibylPull.getPriceNoOlderThan(feed, feedId, maxAge);
    }
}
