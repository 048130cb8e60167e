"""What is hashed and signed (docs/PROTOCOL.md): ABI encodings of the leaf
and header, the Keccak Merkle tree with sorted pairs, the margin root (of the margin
commands and the margin state), the header digest."""

from __future__ import annotations

from Crypto.Hash import keccak

from .types import LEAF_STATUSES, MarginCheckpoint, MarginCommand, MerkleProof, ReportHeader, ReportLeaf

MAX_LEAVES = 65_536
PROTOCOL_VERSION = 2


def keccak256(data: bytes) -> bytes:
    return keccak.new(digest_bits=256, data=data).digest()


REPORT_DOMAIN_HASH = keccak256(b"Sibyl report v1")
COMMANDS_DOMAIN = b"Sibyl margin commands v1"
MARGIN_STATE_DOMAIN = b"Sibyl margin state v1"


def word(v: int) -> bytes:
    """A 32-byte ABI word (two's complement for negative values)."""
    if not -(1 << 255) <= v < (1 << 256):
        raise OverflowError(f"{v} does not fit in 256 bits")
    return (v % (1 << 256)).to_bytes(32, "big")


def feed_id_bytes32(feed_id: str) -> bytes:
    b = feed_id.encode("ascii")
    return b + bytes(32 - len(b))


def encode_leaf(leaf: ReportLeaf) -> bytes:
    """``abi.encode(leaf)``: 13 words, 416 bytes."""
    return feed_id_bytes32(leaf.feed_id) + b"".join(
        word(v)
        for v in (
            leaf.price,
            leaf.confidence,
            leaf.num_observations,
            leaf.observed_at_ms,
            leaf.bid,
            leaf.ask,
            leaf.venues,
            LEAF_STATUSES.index(leaf.status),
            leaf.flags,
            leaf.ema,
            leaf.ema_confidence,
            leaf.volatility,
        )
    )


def encode_header(h: ReportHeader) -> bytes:
    """``abi.encode(version, configDigest, round, timestampMs, merkleRoot, marginRoot)``: 192 bytes."""
    return word(h.version) + h.config_digest + word(h.round) + word(h.timestamp_ms) + h.merkle_root + h.margin_root


def commands_root(commands: list[MarginCommand]) -> bytes:
    """The root of a report's margin commands (in report order), the header's
    ``margin_root`` when the report carries no margin state (see ``margin_root``):
    all zero for none, else ``keccak256("Sibyl margin commands v1" ‖ for each command:
    origin u16 ‖ nonce u64 ‖ len(body) u32 ‖ body)``, big-endian, the body as UTF-8."""
    if not commands:
        return bytes(32)
    out = bytearray(COMMANDS_DOMAIN)
    for c in commands:
        body = c.body.encode("utf-8")
        out += c.origin.to_bytes(2, "big") + c.nonce.to_bytes(8, "big") + len(body).to_bytes(4, "big") + body
    return keccak256(bytes(out))


def margin_root(commands: list[MarginCommand], state: MarginCheckpoint | None = None) -> bytes:
    """The header's ``margin_root``: ``commands_root(commands)`` when the report carries
    no margin state, else ``keccak256("Sibyl margin state v1" ‖ commands_root ‖
    round u64 ‖ state_root)``, big-endian."""
    root = commands_root(commands)
    if state is None:
        return root
    if len(state.root) != 32:
        raise ValueError(f"margin state root has {len(state.root)} bytes, expected 32")
    return keccak256(MARGIN_STATE_DOMAIN + root + state.round.to_bytes(8, "big") + state.root)


def header_digest(h: ReportHeader) -> bytes:
    """The 32 bytes the committee signs."""
    return keccak256(REPORT_DOMAIN_HASH + encode_header(h))


def leaf_hash(leaf: ReportLeaf) -> bytes:
    return keccak256(b"\x00" + encode_leaf(leaf))


def node_hash(a: bytes, b: bytes) -> bytes:
    lo, hi = (a, b) if a <= b else (b, a)
    return keccak256(b"\x01" + lo + hi)


def merkle_root(leaves: list[ReportLeaf]) -> bytes:
    level = [leaf_hash(x) for x in leaves]
    if not level:
        return bytes(32)
    while len(level) > 1:
        # An odd last node is promoted unchanged.
        level = [node_hash(level[i], level[i + 1]) if i + 1 < len(level) else level[i] for i in range(0, len(level), 2)]
    return level[0]


def proof_length(index: int, count: int) -> int:
    i, n, length = index, count, 0
    while n > 1:
        if not (i == n - 1 and n % 2 == 1):
            length += 1
        i //= 2
        n = (n + 1) // 2
    return length


def verify_proof(hash_: bytes, proof: MerkleProof, root: bytes) -> bool:
    """Whether ``proof`` places ``hash_`` under ``root`` (its shape checked first)."""
    if proof.leaf_index >= proof.leaf_count or proof.leaf_count > MAX_LEAVES:
        return False
    if proof_length(proof.leaf_index, proof.leaf_count) != len(proof.siblings):
        return False
    h = hash_
    for s in proof.siblings:
        h = node_hash(h, s)
    return h == root
