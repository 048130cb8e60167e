"""The report and its parts (integers as ``int``, bytes as ``bytes``) and
their readers from the HTTP API's JSON (docs/PROTOCOL.md, docs/API.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

Suite = Literal["ed25519", "secp256k1-evm"]
SUITES: tuple[Suite, ...] = ("ed25519", "secp256k1-evm")

LEAF_STATUSES = ("ok", "degraded", "stale", "halted", "market_closed")
FLAG_NAMES = (
    "few_venues",
    "wide_confidence",
    "peg_departed",
    "out_of_band",
    "unconfirmed_jump",
    "stale",
    "halted",
    "market_closed",
)
_FEED_ID = re.compile(r"^[A-Z0-9._-]{1,32}$")


class SibylFormatError(ValueError):
    """The API's JSON does not have the shape this SDK reads."""

    def __init__(self, message: str) -> None:
        super().__init__(f"{message}; is the endpoint a Sibyl API of a compatible version?")


@dataclass(frozen=True)
class ReportHeader:
    version: int
    config_digest: bytes
    round: int
    timestamp_ms: int
    merkle_root: bytes
    # ``margin_root(commands, margin_state)`` of the report's margin data; all zero
    # when it carries neither commands nor a margin state.
    margin_root: bytes = bytes(32)


@dataclass(frozen=True)
class ReportLeaf:
    """One feed's leaf; prices are fixed-point integers with the feed's decimals."""

    feed_id: str
    price: int
    confidence: int
    num_observations: int
    observed_at_ms: int
    bid: int = 0
    ask: int = 0
    venues: int = 0
    status: str = "ok"
    flags: int = 0
    ema: int = 0
    ema_confidence: int = 0
    volatility: int = 0

    @property
    def flag_names(self) -> list[str]:
        return [n for i, n in enumerate(FLAG_NAMES) if self.flags >> i & 1]


@dataclass(frozen=True)
class MarginCommand:
    """A margin command the committee ordered into a report (opaque to verification)."""

    origin: int
    nonce: int
    body: str


@dataclass(frozen=True)
class MarginCheckpoint:
    """The margin engine's state root after a round, which every signer of the
    report computed and attested; account proofs verify against ``root``."""

    # The state is the one after this round's report (its prices, then its commands).
    round: int
    # The engine's state root (docs/MARGIN.md, "State root"), 32 bytes.
    root: bytes


@dataclass(frozen=True)
class SignedReport:
    header: ReportHeader
    leaves: list[ReportLeaf]
    signatures: dict[str, bytes] = field(default_factory=dict)
    # The round's margin commands in report order.
    commands: list[MarginCommand] = field(default_factory=list)
    # The margin state root the report carries, if any; committed by ``header.margin_root``.
    margin_state: MarginCheckpoint | None = None


@dataclass(frozen=True)
class MerkleProof:
    """Sibling hashes from the leaf up."""

    leaf_index: int
    leaf_count: int
    siblings: list[bytes]


def _obj(v: Any, what: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise SibylFormatError(f"{what} is not a JSON object")
    return v


def to_int(v: Any, what: str) -> int:
    """A JSON integer or decimal string as ``int``."""
    if isinstance(v, bool):
        raise SibylFormatError(f"{what} is not an integer")
    if isinstance(v, int):
        return v
    if isinstance(v, str) and re.fullmatch(r"-?[0-9]+", v):
        return int(v)
    raise SibylFormatError(f"{what} is not an integer (got {v!r})")


def _small(v: Any, what: str, top: int) -> int:
    n = to_int(v, what)
    if not 0 <= n <= top:
        raise SibylFormatError(f"{what} = {n} is outside 0..={top}")
    return n


def from_hex(s: Any, what: str = "value", length: int | None = None) -> bytes:
    """Bytes of a hex string, ``0x`` optional."""
    if not isinstance(s, str):
        raise SibylFormatError(f"{what} is not a hex string")
    t = s[2:] if s[:2] in ("0x", "0X") else s
    try:
        b = bytes.fromhex(t)
    except ValueError:
        raise SibylFormatError(f"{what} is not a hex string") from None
    if length is not None and len(b) != length:
        raise SibylFormatError(f"{what} has {len(b)} bytes, expected {length}")
    return b


def header_from_json(v: Any) -> ReportHeader:
    o = _obj(v, "header")
    return ReportHeader(
        version=_small(o.get("version"), "header.version", 255),
        config_digest=from_hex(o.get("config_digest"), "header.config_digest", 32),
        round=to_int(o.get("round"), "header.round"),
        timestamp_ms=to_int(o.get("timestamp_ms"), "header.timestamp_ms"),
        merkle_root=from_hex(o.get("merkle_root"), "header.merkle_root", 32),
        # absent: zero, as the Rust reader defaults it
        margin_root=bytes(32) if o.get("margin_root") is None else from_hex(o.get("margin_root"), "header.margin_root", 32),
    )


def _status(v: Any, what: str) -> str:
    if v is None:
        return "ok"
    if isinstance(v, str) and v in LEAF_STATUSES:
        return v
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < len(LEAF_STATUSES):
        return LEAF_STATUSES[v]
    raise SibylFormatError(f"{what} is not a leaf status (got {v!r})")


def _flags(v: Any, what: str) -> int:
    if v is None:
        return 0
    if isinstance(v, list):
        bits = 0
        for name in v:
            if name not in FLAG_NAMES:
                raise SibylFormatError(f"{what} names an unknown flag {name!r}")
            bits |= 1 << FLAG_NAMES.index(name)
        return bits
    return _small(v, what, 0xFFFF)


def leaf_from_json(v: Any, what: str = "leaf") -> ReportLeaf:
    """A leaf from a report's serde form, a stream leaf or a feed value."""
    o = _obj(v, what)
    feed_id = o.get("feed_id")
    if not isinstance(feed_id, str) or not _FEED_ID.match(feed_id):
        raise SibylFormatError(f"{what}.feed_id {feed_id!r} is not 1..=32 characters of [A-Z0-9-_.]")

    def opt(k: str) -> int:
        x = o.get(k)
        return 0 if x is None else to_int(x, f"{what}.{k}")

    return ReportLeaf(
        feed_id=feed_id,
        price=to_int(o.get("price"), f"{what}.price"),
        confidence=to_int(o.get("confidence"), f"{what}.confidence"),
        num_observations=_small(o.get("num_observations"), f"{what}.num_observations", 0xFFFF),
        observed_at_ms=to_int(o.get("observed_at_ms"), f"{what}.observed_at_ms"),
        bid=opt("bid"),
        ask=opt("ask"),
        venues=_small(o.get("venues", 0), f"{what}.venues", 0xFFFF),
        status=_status(o.get("status"), f"{what}.status"),
        flags=_flags(o.get("flags"), f"{what}.flags"),
        ema=opt("ema"),
        ema_confidence=opt("ema_confidence"),
        volatility=opt("volatility"),
    )


def signatures_from_json(v: Any) -> dict[str, bytes]:
    o = _obj(v, "signatures")
    return {k: from_hex(s, f"signatures.{k}") for k, s in o.items() if k in SUITES}


def command_from_json(v: Any, what: str = "command") -> MarginCommand:
    """A ``MarginCommand`` from its API form (``origin``, ``nonce``, ``body``)."""
    o = _obj(v, what)
    body = o.get("body")
    if not isinstance(body, str):
        raise SibylFormatError(f"{what}.body is not a string")
    return MarginCommand(
        origin=_small(o.get("origin"), f"{what}.origin", 0xFFFF),
        nonce=_small(o.get("nonce"), f"{what}.nonce", (1 << 64) - 1),
        body=body,
    )


def margin_checkpoint_from_json(v: Any, what: str = "margin_state") -> MarginCheckpoint:
    """A ``MarginCheckpoint`` from its API form (``round``, ``root``)."""
    o = _obj(v, what)
    return MarginCheckpoint(
        round=_small(o.get("round"), f"{what}.round", (1 << 64) - 1),
        root=from_hex(o.get("root"), f"{what}.root", 32),
    )


def report_from_json(v: Any) -> SignedReport:
    """A ``SignedReport`` from its API form (``report`` of ``/v1/reports/{round}``)."""
    o = _obj(v, "report")
    leaves = o.get("leaves")
    if not isinstance(leaves, list):
        raise SibylFormatError("report.leaves is not a list")
    commands = o.get("commands", [])
    if not isinstance(commands, list):
        raise SibylFormatError("report.commands is not a list")
    return SignedReport(
        header=header_from_json(o.get("header")),
        leaves=[leaf_from_json(x, f"report.leaves[{i}]") for i, x in enumerate(leaves)],
        signatures=signatures_from_json(o.get("signatures")),
        commands=[command_from_json(x, f"report.commands[{i}]") for i, x in enumerate(commands)],
        # absent (or null): no margin state, as the Rust reader defaults it
        margin_state=None
        if o.get("margin_state") is None
        else margin_checkpoint_from_json(o.get("margin_state"), "report.margin_state"),
    )


def proof_from_json(v: Any) -> MerkleProof:
    o = _obj(v, "proof")
    sib = o.get("siblings")
    if not isinstance(sib, list):
        raise SibylFormatError("proof.siblings is not a list")
    return MerkleProof(
        leaf_index=_small(o.get("leaf_index"), "proof.leaf_index", 0xFFFFFFFF),
        leaf_count=_small(o.get("leaf_count"), "proof.leaf_count", 0xFFFFFFFF),
        siblings=[from_hex(s, f"proof.siblings[{i}]", 32) for i, s in enumerate(sib)],
    )
