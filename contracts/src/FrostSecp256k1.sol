// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

/// @title FROST(secp256k1, Keccak-256) signature verification with one `ecrecover`.
/// @notice Verifies Schnorr signatures exactly as the Rust crate `frost-secp256k1-evm` 3.0
/// produces them (ciphersuite "FROST-secp256k1-KECCAK256-v1"):
///
///   c = H2(R_compressed(33) || PK_compressed(33) || msg)  with
///   H2(m) = hash_to_field(expand_message_xmd<Keccak256>(m, DST, 48 bytes)) mod n,
///   DST = "FROST-secp256k1-KECCAK256-v1chal"
///   valid  <=>  z*G == R + c*PK
///
/// The group equation is checked with the `ecrecover` trick: ecrecover(h, v, r, s) returns
/// the address of r^-1 (s*P - h*G), where P is the point with x = r and parity from v.
/// With r = PK.x, v = 27 + parity(PK.y), s = -c*PK.x and h = -z*PK.x this is
/// z*G - c*PK, which must equal R; we compare addresses (R is passed as x, y).
library FrostSecp256k1 {
    /// secp256k1 group order.
    uint256 internal constant N =
        0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;
    /// secp256k1 field prime.
    uint256 internal constant P =
        0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F;
    /// "FROST-secp256k1-KECCAK256-v1chal": the H2 domain-separation tag, exactly 32 bytes.
    bytes32 internal constant CHALLENGE_DST = "FROST-secp256k1-KECCAK256-v1chal";

    /// The FROST challenge c = H2(R || PK || msg) of `frost-secp256k1-evm`.
    /// @param rx R's x coordinate, @param rOdd whether R's y is odd,
    /// @param pkx the group key's x coordinate, @param pkOdd whether its y is odd.
    function challenge(uint256 rx, bool rOdd, uint256 pkx, bool pkOdd, bytes32 message)
        internal
        pure
        returns (uint256 c)
    {
        assembly ("memory-safe") {
            let p := mload(0x40)
            // msg' = Z_pad(136 zero bytes) || R(33) || PK(33) || msg(32) || I2OSP(48, 2)
            //        || I2OSP(0, 1) || DST(32) || I2OSP(32, 1)        = 270 bytes
            calldatacopy(p, calldatasize(), 136) // zeros (reading past the calldata)
            mstore8(add(p, 136), add(2, rOdd))
            mstore(add(p, 137), rx)
            mstore8(add(p, 169), add(2, pkOdd))
            mstore(add(p, 170), pkx)
            mstore(add(p, 202), message)
            mstore8(add(p, 234), 0)
            mstore8(add(p, 235), 48)
            mstore8(add(p, 236), 0)
            mstore(add(p, 237), CHALLENGE_DST)
            mstore8(add(p, 269), 32)
            let b0 := keccak256(p, 270)
            // b1 = H(b0 || I2OSP(1, 1) || DST'), b2 = H((b0 ^ b1) || I2OSP(2, 1) || DST')
            mstore(p, b0)
            mstore8(add(p, 32), 1)
            mstore(add(p, 33), CHALLENGE_DST)
            mstore8(add(p, 65), 32)
            let b1 := keccak256(p, 66)
            mstore(p, xor(b0, b1))
            mstore8(add(p, 32), 2)
            let b2 := keccak256(p, 66)
            // uniform_bytes = b1 || b2[0..16], read as a 384-bit big-endian integer mod n.
            c := addmod(mulmod(b1, shl(128, 1), N), shr(128, b2), N)
        }
    }

    /// True iff (R, z) is a valid FROST signature of `message` under the group key whose
    /// x coordinate is `pkx` and whose y parity is `pkOdd`. `pkx` must be a valid key
    /// (non-zero, below N, on the curve); `isValidKey` checks that when the key is set.
    function verify(uint256 pkx, bool pkOdd, bytes32 message, uint256 rx, uint256 ry, uint256 z)
        internal
        view
        returns (bool valid)
    {
        if (z == 0 || z >= N) return false;
        uint256 c = challenge(rx, ry & 1 == 1, pkx, pkOdd, message);
        assembly ("memory-safe") {
            // address(R) = last 20 bytes of keccak256(R.x || R.y)
            mstore(0x00, rx)
            mstore(0x20, ry)
            let expected := and(keccak256(0x00, 0x40), 0xffffffffffffffffffffffffffffffffffffffff)
            // ecrecover(h, v, r, s) with h = -z*pkx, v = 27 + parity, r = pkx, s = -c*pkx
            // (mod n; never zero: c, z, pkx are in [1, n)), called directly: the precompile
            // writes nothing on failure, so the output word is cleared first.
            let p := mload(0x40)
            mstore(p, sub(N, mulmod(z, pkx, N)))
            mstore(add(p, 0x20), add(27, pkOdd))
            mstore(add(p, 0x40), pkx)
            mstore(add(p, 0x60), sub(N, mulmod(c, pkx, N)))
            mstore(0x00, 0)
            let ok := staticcall(gas(), 0x01, p, 0x80, 0x00, 0x20)
            let recovered := mload(0x00)
            valid := and(ok, and(iszero(iszero(recovered)), eq(recovered, expected)))
        }
    }

    /// A group key usable by `verify`: on the curve, x in [1, n) so `ecrecover` accepts it.
    function isValidKey(uint256 x, uint256 y) internal pure returns (bool) {
        if (x == 0 || x >= N || y >= P) return false;
        uint256 rhs = addmod(mulmod(mulmod(x, x, P), x, P), 7, P);
        return mulmod(y, y, P) == rhs;
    }
}
