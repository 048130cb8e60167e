// SPDX-License-Identifier: MIT
pragma solidity ^0.8.0;

// Consumers written only against Chainlink's published interfaces, as lending protocols
// integrate a price feed: none of them knows anything about Sibyl.
import {
    AggregatorV3Interface
} from "@chainlink/contracts/src/v0.8/shared/interfaces/AggregatorV3Interface.sol";
import {
    AggregatorInterface
} from "@chainlink/contracts/src/v0.8/shared/interfaces/AggregatorInterface.sol";

/// Validates the answer against the previous round before using it (the pattern that could
/// not even be configured against a feed without history).
contract PreviousRoundConsumer {
    AggregatorV3Interface public immutable oracle;
    uint256 public immutable maxAge;
    uint256 public immutable maxMoveBps;

    constructor(AggregatorV3Interface oracle_, uint256 maxAge_, uint256 maxMoveBps_) {
        oracle = oracle_;
        maxAge = maxAge_;
        maxMoveBps = maxMoveBps_;
        // configuration check: the feed must answer for the previous round
        price();
    }

    function price() public view returns (uint256) {
        (uint80 roundId, int256 answer,, uint256 updatedAt, uint80 answeredInRound) =
            oracle.latestRoundData();
        require(answer > 0, "non-positive answer");
        require(answeredInRound >= roundId, "stale round");
        require(updatedAt != 0 && updatedAt <= block.timestamp, "bad timestamp");
        require(block.timestamp - updatedAt <= maxAge, "stale price");
        require(roundId > 1, "no previous round");
        (uint80 prevId, int256 prev,, uint256 prevUpdatedAt, uint80 prevAnswered) =
            oracle.getRoundData(roundId - 1);
        require(prevId == roundId - 1, "previous round id");
        require(prevAnswered >= prevId, "previous round stale");
        require(prevUpdatedAt != 0 && prevUpdatedAt <= updatedAt, "previous round later");
        require(prev > 0, "previous answer");
        uint256 a = uint256(answer);
        uint256 p = uint256(prev);
        uint256 move = a > p ? a - p : p - a;
        require(move * 10_000 <= p * maxMoveBps, "jump against the previous round");
        return a * 1e18 / 10 ** oracle.decimals();
    }
}

/// Reads the legacy AggregatorInterface only.
contract LegacyConsumer {
    AggregatorInterface public immutable oracle;

    constructor(AggregatorInterface oracle_) {
        oracle = oracle_;
    }

    function price() external view returns (int256) {
        int256 answer = oracle.latestAnswer();
        require(answer > 0, "no answer");
        require(oracle.latestTimestamp() <= block.timestamp, "future timestamp");
        return answer;
    }
}

/// Reads latestRoundData only, with the usual staleness check.
contract LatestRoundConsumer {
    AggregatorV3Interface public immutable oracle;

    constructor(AggregatorV3Interface oracle_) {
        oracle = oracle_;
    }

    function price(uint256 maxAge) external view returns (int256 answer, uint8 decimals) {
        uint256 updatedAt;
        (, answer,, updatedAt,) = oracle.latestRoundData();
        require(answer > 0, "no answer");
        require(block.timestamp - updatedAt <= maxAge, "stale price"); // panics if updatedAt is ahead
        return (answer, oracle.decimals());
    }
}
