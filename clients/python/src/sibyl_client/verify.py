"""Consumer-side verification: the checks of the Rust reference
(``sibyl_aggregator::verify``), in its order, with its error names.

FROST(Ed25519, SHA-512) signatures are standard Ed25519 signatures over the
digest (checked with libsodium through PyNaCl). FROST(secp256k1, Keccak-256):
``c = hash_to_field(XMD<Keccak-256>, "FROST-secp256k1-KECCAK256-v1chal",
R ‖ PK ‖ digest)`` and the signature is valid iff ``z·G = R + c·PK``
(point arithmetic with libsecp256k1 through coincurve).
"""

from __future__ import annotations

from dataclasses import dataclass

import nacl.bindings
import nacl.exceptions
import nacl.signing
from coincurve import PublicKey

from .encoding import (
    MAX_LEAVES,
    PROTOCOL_VERSION,
    header_digest,
    keccak256,
    leaf_hash,
    margin_root,
    merkle_root,
    verify_proof,
)
from .types import MerkleProof, ReportHeader, ReportLeaf, SignedReport, from_hex

ED_L = 2**252 + 27742317777372353535851937790883648493
SECP_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
SECP_CHALLENGE_DST = b"FROST-secp256k1-KECCAK256-v1chal"


class VerifyError(Exception):
    """Why a report, leaf or key did not verify; ``code`` is the Rust ``VerifyError`` variant."""

    def __init__(self, code: str, message: str, suite: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.suite = suite


@dataclass(frozen=True)
class GroupKeys:
    """What a consumer trusts: the config digest and each required suite's group key."""

    config_digest: bytes
    ed25519: bytes | None = None
    secp256k1_evm: bytes | None = None

    @classmethod
    def from_hex(cls, config_digest: str, ed25519: str | None = None, secp256k1_evm: str | None = None) -> GroupKeys:
        """Keys from hex (``0x`` optional); each key must be a valid point (``BadGroupKey``)."""
        try:
            digest = from_hex(config_digest, "config digest", 32)
            ed = None if ed25519 is None else from_hex(ed25519, "ed25519 group key", 32)
            evm = None if secp256k1_evm is None else from_hex(secp256k1_evm, "secp256k1-evm group key", 33)
        except ValueError as e:
            raise VerifyError("BadGroupKey", str(e)) from None
        if ed is not None and not nacl.bindings.crypto_core_ed25519_is_valid_point(ed):
            raise VerifyError("BadGroupKey", "invalid ed25519 group key: not a valid point", "ed25519")
        if evm is not None:
            _secp_point(evm, "secp256k1-evm group key", "BadGroupKey")
        return cls(digest, ed, evm)

    @property
    def suites(self) -> list[str]:
        return [s for s, k in (("ed25519", self.ed25519), ("secp256k1-evm", self.secp256k1_evm)) if k is not None]


@dataclass(frozen=True)
class VerifiedReport:
    report: SignedReport
    digest: bytes
    suites: list[str]


def _secp_point(b: bytes, what: str, code: str) -> PublicKey:
    if len(b) != 33:
        raise VerifyError(code, f"invalid {what}: {len(b)} bytes, expected a 33-byte compressed point", "secp256k1-evm")
    try:
        return PublicKey(b)
    except (ValueError, TypeError) as e:
        raise VerifyError(code, f"invalid {what}: {e}", "secp256k1-evm") from None


def _malformed(suite: str, reason: str) -> VerifyError:
    return VerifyError("MalformedSignature", f"{suite} signature is malformed: {reason}", suite)


def _bad(suite: str) -> VerifyError:
    return VerifyError("BadSignature", f"{suite} signature does not verify against the group key for this report's digest", suite)


def _check_ed25519(key: bytes, digest: bytes, sig: bytes) -> None:
    if len(sig) != 64:
        raise _malformed("ed25519", f"{len(sig)} bytes, expected 64")
    if int.from_bytes(sig[32:], "little") >= ED_L:
        raise _malformed("ed25519", "z is not a canonical scalar")
    if not nacl.bindings.crypto_core_ed25519_is_valid_point(sig[:32]):
        raise _malformed("ed25519", "R is not a valid point")
    try:
        nacl.signing.VerifyKey(key).verify(digest, sig)
    except nacl.exceptions.BadSignatureError:
        raise _bad("ed25519") from None


def expand_message_xmd_keccak256(msg: bytes, dst: bytes, length: int) -> bytes:
    """RFC 9380 expand_message_xmd with Keccak-256 (32-byte output, 136-byte block)."""
    ell = -(-length // 32)
    if ell > 255 or len(dst) > 255:
        raise ValueError("expand_message_xmd: length or DST too long")
    dst_prime = dst + bytes([len(dst)])
    b0 = keccak256(bytes(136) + msg + length.to_bytes(2, "big") + b"\x00" + dst_prime)
    b = [keccak256(b0 + b"\x01" + dst_prime)]
    for i in range(2, ell + 1):
        b.append(keccak256(bytes(x ^ y for x, y in zip(b0, b[-1])) + bytes([i]) + dst_prime))
    return b"".join(b)[:length]


def secp256k1_evm_challenge(r_compressed: bytes, key: bytes, digest: bytes) -> int:
    """frost-secp256k1-evm's H2 over ``R ‖ PK ‖ digest``: one scalar (48 uniform bytes mod n)."""
    okm = expand_message_xmd_keccak256(r_compressed + key + digest, SECP_CHALLENGE_DST, 48)
    return int.from_bytes(okm, "big") % SECP_N


def _check_secp256k1_evm(key: bytes, digest: bytes, sig: bytes) -> None:
    suite = "secp256k1-evm"
    if len(sig) != 65:
        raise _malformed(suite, f"{len(sig)} bytes, expected 65")
    r = _secp_point(sig[:33], "R", "MalformedSignature")
    z = int.from_bytes(sig[33:], "big")
    if z >= SECP_N:
        raise _malformed(suite, "z is not a canonical scalar")
    pk = _secp_point(key, "secp256k1-evm group key", "BadGroupKey")
    c = secp256k1_evm_challenge(sig[:33], key, digest)
    # z·G = R + c·PK; z = 0 or c = 0 (probability ~2^-256) cannot be checked
    # by libsecp256k1's key API and is refused.
    if z == 0 or c == 0:
        raise _bad(suite)
    try:
        rhs = PublicKey.combine_keys([r, pk.multiply(c.to_bytes(32, "big"))])
    except ValueError:  # R + c·PK is the point at infinity
        raise _bad(suite) from None
    if PublicKey.from_secret(z.to_bytes(32, "big")).format() != rhs.format():
        raise _bad(suite)


def _check_header(h: ReportHeader, keys: GroupKeys) -> None:
    if h.version != PROTOCOL_VERSION:
        raise VerifyError(
            "WrongVersion",
            f"report version {h.version} is not supported (expected {PROTOCOL_VERSION}); upgrade the consumer or the committee",
        )
    if h.config_digest != keys.config_digest:
        raise VerifyError(
            "WrongConfigDigest",
            f"report config digest 0x{h.config_digest.hex()} is not the expected 0x{keys.config_digest.hex()}; "
            "the report belongs to a different committee configuration",
        )


def _check_signatures(digest: bytes, signatures: dict[str, bytes], keys: GroupKeys) -> list[str]:
    suites = keys.suites
    if not suites:
        raise VerifyError("NoGroupKeys", "no group key is configured; give at least one ciphersuite's group key")
    for suite in suites:
        sig = signatures.get(suite)
        if sig is None:
            raise VerifyError("MissingSignature", f"report carries no {suite} signature, which the committee's keys require", suite)
        if suite == "ed25519":
            assert keys.ed25519 is not None
            _check_ed25519(keys.ed25519, digest, sig)
        else:
            assert keys.secp256k1_evm is not None
            _check_secp256k1_evm(keys.secp256k1_evm, digest, sig)
    return suites


def verify_report(report: SignedReport, keys: GroupKeys) -> VerifiedReport:
    """Verifies a whole report; raises ``VerifyError`` with the first failure, in Rust's order."""
    _check_header(report.header, keys)
    leaves = report.leaves
    if len(leaves) > MAX_LEAVES:
        raise VerifyError("TooManyLeaves", f"report has {len(leaves)} leaves, more than the maximum {MAX_LEAVES}")
    digest = header_digest(report.header)
    suites = _check_signatures(digest, report.signatures, keys)
    for i in range(1, len(leaves)):
        if leaves[i - 1].feed_id.encode() >= leaves[i].feed_id.encode():
            raise VerifyError(
                "LeavesNotSorted",
                f"leaf {i} ({leaves[i].feed_id}) is not in strictly ascending feed-id order; leaves must be sorted and unique",
            )
    computed = merkle_root(leaves)
    if computed != report.header.merkle_root:
        raise VerifyError(
            "RootMismatch",
            f"Merkle root mismatch: header says 0x{report.header.merkle_root.hex()}, the leaves give 0x{computed.hex()}",
        )
    state = report.margin_state
    margin = margin_root(report.commands, state)
    if margin != report.header.margin_root:
        carried = "no margin state" if state is None else f"the margin state of round {state.round}"
        raise VerifyError(
            "CommandsMismatch",
            f"margin root mismatch: header says 0x{report.header.margin_root.hex()}, "
            f"the report's {len(report.commands)} margin commands and {carried} give 0x{margin.hex()}",
        )
    return VerifiedReport(report, digest, suites)


def verify_leaf(
    header: ReportHeader,
    leaf: ReportLeaf,
    proof: MerkleProof,
    signatures: dict[str, bytes],
    keys: GroupKeys,
) -> bytes:
    """Verifies one feed by its Merkle proof and the header's signatures; returns the digest."""
    _check_header(header, keys)
    if not verify_proof(leaf_hash(leaf), proof, header.merkle_root):
        raise VerifyError("BadProof", f"Merkle proof does not place feed {leaf.feed_id} under the header's root")
    digest = header_digest(header)
    _check_signatures(digest, signatures, keys)
    return digest
