// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {SibylFeed} from "../../src/SibylFeed.sol";

/// Exposes SibylFeed's per-leaf store (the part after the signature check) so that halmos can
/// run it on symbolic leaves; everything else is the real contract.
contract StoreHarness is SibylFeed {
    constructor(bytes32[] memory ids, uint8[] memory ds)
        SibylFeed(
            bytes32(uint256(1)),
            0x79BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798,
            0x483ADA7726A3C4655DA4FBFC0E1108A8FD17B448A68554199C47D08FFB10D4B8,
            5_000,
            ids,
            ds
        )
    {}

    function store(uint256 timestampMs, Leaf calldata leaf) external {
        _store(timestampMs, leaf.feedId, leaf.price, leaf.confidence);
    }
}

/// Symbolic tests (halmos; `check_` functions; not run by forge): the storage packing
/// round-trips every in-range value, and the monotonicity rules hold for all inputs.
/// Run with scripts/contracts-analysis.
contract StoreSymbolicTest {
    bytes32 internal constant ID = bytes32("BTC-USD");
    StoreHarness internal feed;

    function setUp() public {
        bytes32[] memory ids = new bytes32[](1);
        uint8[] memory ds = new uint8[](1);
        (ids[0], ds[0]) = (ID, 8);
        feed = new StoreHarness(ids, ds);
    }

    function leaf(int256 price, uint256 confidence)
        internal
        pure
        returns (SibylFeed.Leaf memory l)
    {
        l.feedId = ID;
        l.price = price;
        l.confidence = confidence;
    }

    /// Packing: an in-range leaf reads back exactly; an out-of-range one changes nothing.
    function check_packingRoundTrips(int256 price, uint256 confidence, uint48 ts) public {
        require(ts > 0);
        feed.store(ts, leaf(price, confidence));
        (, uint80 roundId) = feed.feedInfo(ID);
        bool fits =
            price >= type(int96).min && price <= type(int96).max && confidence <= type(uint72).max;
        if (!fits) {
            assert(roundId == 0);
            return;
        }
        assert(roundId == 1);
        (int256 p, uint256 c, uint64 t, uint64 r) = feed.latestFeed(ID);
        assert(p == price);
        assert(c == confidence);
        assert(t == ts);
        assert(r == 1);
        (uint8 d,) = feed.feedInfo(ID);
        assert(d == 8);
    }

    /// Monotonicity: after any two stores, the round id grew by exactly the number stored, the
    /// stored timestamp never went down, and the previous round is still readable.
    function check_roundAndTimestampNeverDecrease(uint48 t1, uint48 t2, int64 p1, int64 p2) public {
        require(t1 > 0);
        feed.store(t1, leaf(p1, 1));
        feed.store(t2, leaf(p2, 2));
        (, uint80 roundId) = feed.feedInfo(ID);
        (int256 p, uint256 c, uint64 t,) = feed.latestFeed(ID);
        if (t2 > t1) {
            assert(roundId == 2);
            assert(p == p2 && c == 2 && t == t2);
            (bool found, int256 prev,,) = feed.getRoundData(ID, 1);
            assert(found && prev == p1);
        } else {
            assert(roundId == 1);
            assert(p == p1 && c == 1 && t == t1);
        }
    }
}
