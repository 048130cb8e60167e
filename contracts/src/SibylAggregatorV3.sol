// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {
    AggregatorV3Interface
} from "@chainlink/contracts/src/v0.8/shared/interfaces/AggregatorV3Interface.sol";
import {SibylFeed} from "./SibylFeed.sol";

/// @title One Sibyl feed behind Chainlink's AggregatorV3Interface.
/// @notice Lets a protocol written for Chainlink read a Sibyl feed unchanged:
///   roundId = answeredInRound = the Sibyl round of the feed's latest report,
///   answer = the price (fixed point with `decimals()`),
///   startedAt = updatedAt = the signed report's timestamp in seconds.
/// The feed contract keeps only each feed's latest value (an update costs one SSTORE), so
/// `getRoundData` answers for the latest round and reverts with `NoDataForRound` otherwise;
/// read history from the Sibyl API or the FeedUpdated events.
contract SibylAggregatorV3 is AggregatorV3Interface {
    /// Version of this adapter.
    uint256 public constant override version = 1;

    SibylFeed public immutable feed;
    bytes32 public immutable feedId;
    uint8 public immutable override decimals;
    string public override description;

    /// The requested round is not the feed's latest one (no history is kept on chain).
    error NoDataForRound(uint80 roundId);

    constructor(SibylFeed feed_, bytes32 feedId_, uint8 decimals_, string memory description_) {
        feed = feed_;
        feedId = feedId_;
        decimals = decimals_;
        description = description_;
    }

    function latestRoundData()
        public
        view
        override
        returns (uint80 roundId, int256 answer, uint256 startedAt, uint256 updatedAt, uint80)
    {
        (int256 price,, uint64 timestampMs, uint64 round) = feed.latestFeed(feedId);
        roundId = uint80(round);
        answer = price;
        startedAt = timestampMs / 1000;
        updatedAt = startedAt;
        return (roundId, answer, startedAt, updatedAt, roundId);
    }

    function getRoundData(uint80 requested)
        external
        view
        override
        returns (uint80 roundId, int256 answer, uint256 startedAt, uint256 updatedAt, uint80)
    {
        (roundId, answer, startedAt, updatedAt,) = latestRoundData();
        if (requested != roundId) revert NoDataForRound(requested);
        return (roundId, answer, startedAt, updatedAt, roundId);
    }

    /// Sibyl's confidence half-width of the latest answer, in the same fixed point.
    function latestConfidence() external view returns (uint256 confidence) {
        (, confidence,,) = feed.latestFeed(feedId);
    }
}
