// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {
    AggregatorV2V3Interface
} from "@chainlink/contracts/src/v0.8/shared/interfaces/AggregatorV2V3Interface.sol";
import {SibylFeed} from "./SibylFeed.sol";

/// @title One Sibyl feed behind Chainlink's AggregatorV2V3Interface.
/// @notice Lets a protocol written for Chainlink read a Sibyl feed unchanged:
///   roundId = answeredInRound = the feed's own round id: 1 at its first stored value, +1 per
///     stored value, never reset (the contract is not replaced at a committee hand-over, so
///     there is one phase: Chainlink's phaseId << 64 | roundId with phaseId 0),
///   answer = the price (fixed point with `decimals()`, the feed registry's value),
///   startedAt = updatedAt = the report's timestamp in seconds, capped at the block that
///     stored it (never later than block.timestamp).
/// getRoundData answers the last `historySize()` round ids. As Chainlink's aggregators document
/// (AggregatorV3Interface): latestRoundData and getRoundData revert with "No data present" when
/// they have nothing to report (before the first value, round 0, a round not reached or no
/// longer held); the legacy AggregatorInterface getters return 0 there, as Chainlink's do.
contract SibylAggregatorV3 is AggregatorV2V3Interface {
    /// Version of this adapter.
    uint256 public constant override version = 2;

    SibylFeed public immutable feed;
    bytes32 public immutable feedId;
    /// The feed registry's decimals, which never change for a feed id.
    uint8 public immutable override decimals;
    string public override description;

    /// `feedId_` must be in the feed's registry (SibylFeed.UnknownFeed otherwise).
    constructor(SibylFeed feed_, bytes32 feedId_, string memory description_) {
        feed = feed_;
        feedId = feedId_;
        (decimals,) = feed_.feedInfo(feedId_);
        description = description_;
    }

    function latestRoundData()
        external
        view
        override
        returns (uint80, int256, uint256, uint256, uint80)
    {
        try feed.latestRoundData(feedId) returns (
            uint80 roundId, int256 answer, uint256 startedAt, uint256 updatedAt, uint80 answered
        ) {
            return (roundId, answer, startedAt, updatedAt, answered);
        } catch {
            revert("No data present");
        }
    }

    function getRoundData(uint80 roundId)
        external
        view
        override
        returns (uint80, int256, uint256, uint256, uint80)
    {
        (bool found, int256 answer,, uint256 updatedAt) = feed.getRoundData(feedId, roundId);
        if (!found) revert("No data present");
        return (roundId, answer, updatedAt, updatedAt, roundId);
    }

    // AggregatorInterface (legacy): 0 where there is no data, as Chainlink's aggregators.

    function latestAnswer() external view override returns (int256 answer) {
        (, uint80 roundId) = feed.feedInfo(feedId);
        (, answer,,) = feed.getRoundData(feedId, roundId);
    }

    function latestTimestamp() external view override returns (uint256 updatedAt) {
        (, uint80 roundId) = feed.feedInfo(feedId);
        (,,, updatedAt) = feed.getRoundData(feedId, roundId);
    }

    function latestRound() external view override returns (uint256 roundId) {
        (, roundId) = feed.feedInfo(feedId);
    }

    function getAnswer(uint256 roundId) external view override returns (int256 answer) {
        if (roundId > type(uint80).max) return 0;
        (, answer,,) = feed.getRoundData(feedId, uint80(roundId));
    }

    function getTimestamp(uint256 roundId) external view override returns (uint256 updatedAt) {
        if (roundId > type(uint80).max) return 0;
        (,,, updatedAt) = feed.getRoundData(feedId, uint80(roundId));
    }

    /// Sibyl's confidence half-width of the latest answer, in the same fixed point.
    function latestConfidence() external view returns (uint256 confidence) {
        (, uint80 roundId) = feed.feedInfo(feedId);
        (,, confidence,) = feed.getRoundData(feedId, roundId);
    }
}
