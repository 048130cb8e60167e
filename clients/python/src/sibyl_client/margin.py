"""Owner-signed margin commands (docs/MARGIN.md, "Account keys"): an account
created with an ``owner`` (an Ed25519 public key) takes the commands that move
its funds or positions only when that key signed them.

::

    signed bytes = "Sibyl margin command v2"
                 ‖ committee key length:u8 ‖ committee key
                 ‖ account:u64 BE ‖ nonce:u64 BE ‖ command (UTF-8, as sent)

The committee key is the group key the committee signs its reports with
(``GET /v1/margin/signing``, ``SibylClient.margin_signing``), so an envelope
is good on one deployment's book only; ``command`` is the command's JSON text
exactly as sent (the engine parses the signed bytes themselves: no canonical
JSON). The nonce must be above the account's last one. The envelope,
``{"account", "nonce", "command", "signature"}``, is the body of
``POST /v1/margin/signed`` (``SibylClient.submit_signed``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import nacl.exceptions
import nacl.signing

SIGNED_COMMAND_DOMAIN = b"Sibyl margin command v2"
"""The domain of the signed bytes (``SIGNED_COMMAND_DOMAIN`` in daemon/margin/src/signed.rs)."""

MAX_COMMITTEE_KEY_LEN = 64
"""Longest committee key the signed bytes carry (a one-byte length)."""

_U64_MAX = (1 << 64) - 1

BytesLike = bytes | str
"""Bytes given as such or as hex (``0x`` optional)."""


def _bytes(v: BytesLike, what: str) -> bytes:
    if isinstance(v, (bytes, bytearray)):
        return bytes(v)
    t = v.strip()
    t = t[2:] if t[:2] in ("0x", "0X") else t
    try:
        return bytes.fromhex(t)
    except ValueError:
        raise ValueError(f"{what} is not hex") from None


def _u64(v: int, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{what} must be an int, got {type(v).__name__}")
    if not 0 <= v <= _U64_MAX:
        raise ValueError(f"{what} = {v} is outside the u64 range")
    return v


def _committee(key: BytesLike) -> bytes:
    k = _bytes(key, "committee key")
    if not 1 <= len(k) <= MAX_COMMITTEE_KEY_LEN:
        raise ValueError(
            f"committee key of {len(k)} bytes; a group key is 1 to {MAX_COMMITTEE_KEY_LEN} (32 for Ed25519, 33 for secp256k1)"
        )
    return k


def _secret(secret_key: BytesLike) -> bytes:
    s = _bytes(secret_key, "secret key")
    if len(s) != 32:
        raise ValueError(f"secret key of {len(s)} bytes, expected 32 (an Ed25519 seed)")
    return s


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("the command text has a lone surrogate (not valid UTF-8)") from None


def command_text(value: Mapping[str, Any]) -> str:
    """The JSON text of a command value, compact, integers exact: e.g.
    ``command_text({"withdraw": {"account": 40, "asset": "USD", "amount": 250_000_000}})``.
    Any text the engine parses as a command will do; this is one."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _text(command: str | Mapping[str, Any]) -> str:
    text = command if isinstance(command, str) else command_text(command)
    _utf8(text)
    return text


def signed_command_bytes(committee_key: BytesLike, account: int, nonce: int, command: str) -> bytes:
    """The bytes an account owner signs: the domain ‖ committee key length (1
    byte) ‖ committee key ‖ account (u64 BE) ‖ nonce (u64 BE) ‖ the command's
    JSON text as UTF-8 (exactly the text sent in the envelope)."""
    key = _committee(committee_key)
    return (
        SIGNED_COMMAND_DOMAIN
        + bytes([len(key)])
        + key
        + _u64(account, "account").to_bytes(8, "big")
        + _u64(nonce, "nonce").to_bytes(8, "big")
        + _utf8(_text(command))
    )


@dataclass(frozen=True)
class SignedCommand:
    """A command with its account owner's signature: the body of ``POST /v1/margin/signed``."""

    account: int
    """The account the command acts on (also named inside ``command``)."""
    nonce: int
    """Above the account's last signed nonce."""
    command: str
    """The command's JSON text, exactly the bytes signed."""
    signature: bytes
    """The 64-byte Ed25519 signature of ``signed_command_bytes(...)``."""

    def to_dict(self) -> dict[str, Any]:
        return {"account": self.account, "nonce": self.nonce, "command": self.command, "signature": self.signature.hex()}

    def to_json(self) -> str:
        """The envelope's JSON text, as ``POST /v1/margin/signed`` takes it (and as the Rust ``SignedCommand`` writes it)."""
        if len(self.signature) != 64:
            raise ValueError(f"signature of {len(self.signature)} bytes, expected 64")
        _u64(self.account, "account")
        _u64(self.nonce, "nonce")
        _text(self.command)
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False)


def sign_command(
    secret_key: BytesLike, committee_key: BytesLike, account: int, nonce: int, command: str | Mapping[str, Any]
) -> SignedCommand:
    """Signs ``command`` (JSON text, or a value ``command_text`` writes) for
    ``account`` with the owner's 32-byte Ed25519 secret key, for the book of
    the committee whose group key is ``committee_key``
    (``client.margin_signing().committee_key``). Ed25519 is deterministic: the
    same inputs give the same signature."""
    text = _text(command)
    msg = signed_command_bytes(committee_key, account, nonce, text)
    sig = nacl.signing.SigningKey(_secret(secret_key)).sign(msg).signature
    return SignedCommand(account=account, nonce=nonce, command=text, signature=bytes(sig))


def owner_public_key(secret_key: BytesLike) -> bytes:
    """The owner key (Ed25519 public key, 32 bytes) of a 32-byte secret key: the account's ``owner``."""
    return bytes(nacl.signing.SigningKey(_secret(secret_key)).verify_key)


def generate_owner_key() -> tuple[bytes, bytes]:
    """A fresh ``(secret_key, public_key)`` from libsodium's CSPRNG (like ``sibyl margin keygen``)."""
    k = nacl.signing.SigningKey.generate()
    return bytes(k), bytes(k.verify_key)


def verify_signed_command(s: SignedCommand, owner: BytesLike, committee_key: BytesLike) -> bool:
    """Whether ``s`` verifies under ``owner`` for ``committee_key``'s book
    (libsodium: canonical encodings, no small-order keys). A local check
    before sending; the engine's strict verification decides."""
    try:
        msg = signed_command_bytes(committee_key, s.account, s.nonce, s.command)
        nacl.signing.VerifyKey(_bytes(owner, "owner key")).verify(msg, s.signature)
        return True
    except (ValueError, TypeError, nacl.exceptions.CryptoError):
        return False
