// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {Vm} from "forge-std/Vm.sol";
import {FrostSecp256k1} from "../../src/FrostSecp256k1.sol";

/// Single-party FROST(secp256k1, Keccak-256) signing inside forge tests: a FROST group
/// signature is an ordinary Schnorr signature under the group key, so a test can sign
/// with a known group secret. R = k*G comes from `vm.createWallet(k)`; c is the
/// contract's own challenge (cross-checked against the Rust crate by frost_kat.json).
library FrostSigner {
    Vm internal constant VM = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));

    struct Key {
        uint256 secret;
        uint256 x;
        uint256 y;
    }

    struct Sig {
        uint256 rx;
        uint256 ry;
        uint256 z;
    }

    function key(uint256 secret) internal returns (Key memory k) {
        Vm.Wallet memory w = VM.createWallet(secret);
        k = Key(secret, w.publicKeyX, w.publicKeyY);
    }

    function sign(Key memory k, uint256 nonce, bytes32 message) internal returns (Sig memory s) {
        Vm.Wallet memory r = VM.createWallet(nonce);
        uint256 c = FrostSecp256k1.challenge(
            r.publicKeyX, r.publicKeyY & 1 == 1, k.x, k.y & 1 == 1, message
        );
        uint256 z = addmod(nonce, mulmod(c, k.secret, FrostSecp256k1.N), FrostSecp256k1.N);
        s = Sig(r.publicKeyX, r.publicKeyY, z);
    }
}
