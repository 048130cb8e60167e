// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {Test, console} from "forge-std/Test.sol";
import {FrostSecp256k1} from "../src/FrostSecp256k1.sol";
import {FrostSigner} from "./utils/FrostSigner.sol";

/// Exposes the library so calls (and their gas) are measured like an external caller's.
contract FrostHarness {
    function challenge(uint256 rx, bool rOdd, uint256 pkx, bool pkOdd, bytes32 m)
        external
        pure
        returns (uint256)
    {
        return FrostSecp256k1.challenge(rx, rOdd, pkx, pkOdd, m);
    }

    function verify(uint256 pkx, bool pkOdd, bytes32 m, uint256 rx, uint256 ry, uint256 z)
        external
        view
        returns (bool)
    {
        return FrostSecp256k1.verify(pkx, pkOdd, m, rx, ry, z);
    }

    /// Gas of the verification alone (challenge + ecrecover), without call overhead.
    function verifyGas(uint256 pkx, bool pkOdd, bytes32 m, uint256 rx, uint256 ry, uint256 z)
        external
        view
        returns (bool ok, uint256 used)
    {
        uint256 before = gasleft();
        ok = FrostSecp256k1.verify(pkx, pkOdd, m, rx, ry, z);
        used = before - gasleft();
    }
}

contract FrostSecp256k1Test is Test {
    /// Field order must match the JSON keys sorted alphabetically (forge's JSON decoding).
    struct Kat {
        uint256 challenge;
        bytes32 message;
        uint256 pkX;
        uint256 pkY;
        uint256 rX;
        uint256 rY;
        uint256 z;
    }

    uint256 internal constant SIGNATURE_GAS_TARGET = 6_000;

    FrostHarness internal h;

    function setUp() public {
        h = new FrostHarness();
    }

    function kats() internal view returns (Kat[] memory) {
        string memory json = vm.readFile("test/data/frost_kat.json");
        return abi.decode(vm.parseJson(json, ".signatures"), (Kat[]));
    }

    /// Signatures made by the Rust crate frost-secp256k1-evm 3.0 (t-of-n, dealer keys):
    /// our challenge equals the crate's H2 and the signatures verify.
    function test_rustSignaturesVerify() public view {
        Kat[] memory ks = kats();
        assertEq(ks.length, 4);
        for (uint256 i = 0; i < ks.length; i++) {
            Kat memory k = ks[i];
            assertEq(
                h.challenge(k.rX, k.rY & 1 == 1, k.pkX, k.pkY & 1 == 1, k.message), k.challenge
            );
            assertTrue(h.verify(k.pkX, k.pkY & 1 == 1, k.message, k.rX, k.rY, k.z));
            assertTrue(FrostSecp256k1.isValidKey(k.pkX, k.pkY));
        }
    }

    function test_rustSignaturesTamperedFail() public view {
        Kat[] memory ks = kats();
        for (uint256 i = 0; i < ks.length; i++) {
            Kat memory k = ks[i];
            bool odd = k.pkY & 1 == 1;
            assertFalse(h.verify(k.pkX, odd, k.message ^ bytes32(uint256(1)), k.rX, k.rY, k.z));
            assertFalse(h.verify(k.pkX, odd, k.message, k.rX, k.rY, k.z + 1));
            assertFalse(h.verify(k.pkX, !odd, k.message, k.rX, k.rY, k.z));
            assertFalse(h.verify(k.pkX, odd, k.message, k.rX, FrostSecp256k1.P - k.rY, k.z));
            // another committee's key
            Kat memory other = ks[(i + 1) % ks.length];
            assertFalse(h.verify(other.pkX, other.pkY & 1 == 1, k.message, k.rX, k.rY, k.z));
            // out-of-range z
            assertFalse(h.verify(k.pkX, odd, k.message, k.rX, k.rY, FrostSecp256k1.N));
            assertFalse(h.verify(k.pkX, odd, k.message, k.rX, k.rY, 0));
        }
    }

    function testFuzz_signVerify(uint256 secret, uint256 nonce, bytes32 message) public {
        secret = bound(secret, 1, FrostSecp256k1.N - 1);
        nonce = bound(nonce, 1, FrostSecp256k1.N - 1);
        FrostSigner.Key memory key = FrostSigner.key(secret);
        vm.assume(key.x < FrostSecp256k1.N);
        FrostSigner.Sig memory s = FrostSigner.sign(key, nonce, message);
        bool odd = key.y & 1 == 1;
        assertTrue(h.verify(key.x, odd, message, s.rx, s.ry, s.z));
        assertFalse(h.verify(key.x, odd, keccak256(abi.encode(message)), s.rx, s.ry, s.z));
        assertFalse(h.verify(key.x, odd, message, s.rx, s.ry, addmod(s.z, 1, FrostSecp256k1.N)));
    }

    function test_isValidKey() public pure {
        // G itself
        uint256 gx = 0x79BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798;
        uint256 gy = 0x483ADA7726A3C4655DA4FBFC0E1108A8FD17B448A68554199C47D08FFB10D4B8;
        assertTrue(FrostSecp256k1.isValidKey(gx, gy));
        assertFalse(FrostSecp256k1.isValidKey(gx, gy + 1));
        assertFalse(FrostSecp256k1.isValidKey(0, gy));
        assertFalse(FrostSecp256k1.isValidKey(gx, FrostSecp256k1.P));
    }

    /// Gas of one signature verification (target <= 6,000).
    function test_gasSignatureVerification() public view {
        Kat memory k = kats()[0];
        (bool ok, uint256 used) = h.verifyGas(k.pkX, k.pkY & 1 == 1, k.message, k.rX, k.rY, k.z);
        assertTrue(ok);
        console.log("gas: FROST signature verification", used);
        assertLe(used, SIGNATURE_GAS_TARGET);
    }
}
