// What is hashed and signed (docs/PROTOCOL.md): the ABI encodings of the
// leaf and the header, the Keccak Merkle tree with sorted pairs, and the
// domain-separated header digest the committee signs.

import { keccak_256 } from '@noble/hashes/sha3.js';
import { concat, equalBytes, word } from './hex.js';
import {
  LEAF_STATUSES,
  type MarginCheckpoint,
  type MarginCommand,
  type MerkleProof,
  type ReportHeader,
  type ReportLeaf,
} from './types.js';

const utf8 = new TextEncoder();

/** Leaves in a report at most; a proof has at most 16 siblings. */
export const MAX_LEAVES = 65_536;

/** The protocol version this SDK verifies. */
export const PROTOCOL_VERSION = 2;

/** `keccak256("Sibyl report v1")`: the digest's domain separator. */
export const REPORT_DOMAIN_HASH = keccak_256(utf8.encode('Sibyl report v1'));

/** A feed id as its right-zero-padded `bytes32`. */
export function feedIdBytes32(id: string): Uint8Array {
  const b = utf8.encode(id);
  if (b.length === 0 || b.length > 32 || !/^[A-Z0-9._-]+$/.test(id)) {
    throw new RangeError(`feed id ${JSON.stringify(id)} is not 1..=32 characters of [A-Z0-9-_.]`);
  }
  const out = new Uint8Array(32);
  out.set(b);
  return out;
}

/** `abi.encode(leaf)`: 13 words, 416 bytes. */
export function encodeLeaf(l: ReportLeaf): Uint8Array {
  return concat(
    feedIdBytes32(l.feedId),
    word(l.price),
    word(l.confidence),
    word(BigInt(l.numObservations)),
    word(l.observedAtMs),
    word(l.bid),
    word(l.ask),
    word(BigInt(l.venues)),
    word(BigInt(LEAF_STATUSES.indexOf(l.status))),
    word(BigInt(l.flags)),
    word(l.ema),
    word(l.emaConfidence),
    word(l.volatility),
  );
}

/** `abi.encode(version, configDigest, round, timestampMs, merkleRoot, marginRoot)`: 192 bytes. */
export function encodeHeader(h: ReportHeader): Uint8Array {
  return concat(
    word(BigInt(h.version)),
    h.configDigest,
    word(h.round),
    word(h.timestampMs),
    h.merkleRoot,
    h.marginRoot,
  );
}

/** The domain of `commandsRoot`. */
export const COMMANDS_DOMAIN = utf8.encode('Sibyl margin commands v1');

/** `value` as `bytes` big-endian bytes (unsigned); throws if it does not fit. */
function be(value: bigint, bytes: number, what: string): Uint8Array {
  if (value < 0n || value >= 1n << BigInt(8 * bytes)) throw new RangeError(`${what} ${value} does not fit ${bytes} bytes`);
  return word(value).subarray(32 - bytes);
}

/**
 * The root of a report's margin commands (in report order), the header's
 * `marginRoot` when the report carries no margin state (see `marginRoot`):
 * all zero for none, else `keccak256("Sibyl margin commands v1" ‖ for each
 * command: origin u16 ‖ nonce u64 ‖ len(body) u32 ‖ body)`, big-endian, the
 * body as its UTF-8 bytes.
 */
export function commandsRoot(commands: readonly MarginCommand[]): Uint8Array {
  if (commands.length === 0) return new Uint8Array(32);
  const parts: Uint8Array[] = [COMMANDS_DOMAIN];
  for (const c of commands) {
    const body = utf8.encode(c.body);
    parts.push(
      be(BigInt(c.origin), 2, 'command origin'),
      be(c.nonce, 8, 'command nonce'),
      be(BigInt(body.length), 4, 'command body length'),
      body,
    );
  }
  return keccak_256(concat(...parts));
}

/** The domain of `marginRoot` with a margin state. */
export const MARGIN_STATE_DOMAIN = utf8.encode('Sibyl margin state v1');

/**
 * The header's `marginRoot`: `commandsRoot(commands)` when the report carries
 * no margin state, else `keccak256("Sibyl margin state v1" ‖ commandsRoot ‖
 * round u64 ‖ stateRoot)`, big-endian.
 */
export function marginRoot(commands: readonly MarginCommand[], state?: MarginCheckpoint): Uint8Array {
  const inner = commandsRoot(commands);
  if (state === undefined) return inner;
  if (state.root.length !== 32) throw new RangeError(`margin state root has ${state.root.length} bytes, expected 32`);
  return keccak_256(concat(MARGIN_STATE_DOMAIN, inner, be(state.round, 8, 'margin state round'), state.root));
}

/** The 32 bytes the committee signs. */
export function headerDigest(h: ReportHeader): Uint8Array {
  return keccak_256(concat(REPORT_DOMAIN_HASH, encodeHeader(h)));
}

/** `keccak256(0x00 ‖ abi.encode(leaf))`. */
export function leafHash(l: ReportLeaf): Uint8Array {
  return keccak_256(concat(Uint8Array.of(0), encodeLeaf(l)));
}

function compare(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < a.length; i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/** `keccak256(0x01 ‖ min(a, b) ‖ max(a, b))`. */
export function nodeHash(a: Uint8Array, b: Uint8Array): Uint8Array {
  const [lo, hi] = compare(a, b) <= 0 ? [a, b] : [b, a];
  return keccak_256(concat(Uint8Array.of(1), lo, hi));
}

/** The Merkle root over `leaves` (in report order); zero for none. */
export function merkleRoot(leaves: readonly ReportLeaf[]): Uint8Array {
  let level = leaves.map(leafHash);
  if (level.length === 0) return new Uint8Array(32);
  while (level.length > 1) {
    const next: Uint8Array[] = [];
    for (let i = 0; i < level.length; i += 2) {
      const a = level[i] as Uint8Array;
      const b = level[i + 1];
      next.push(b === undefined ? a : nodeHash(a, b)); // an odd last node is promoted
    }
    level = next;
  }
  return level[0] as Uint8Array;
}

/** Siblings on the path of leaf `index` of `count` (promoted levels add none). */
export function proofLength(index: number, count: number): number {
  let [i, n, len] = [index, count, 0];
  while (n > 1) {
    if (!(i === n - 1 && n % 2 === 1)) len++;
    i = Math.floor(i / 2);
    n = Math.ceil(n / 2);
  }
  return len;
}

/** The proof of leaf `index`, as the API serves it. */
export function merkleProof(leaves: readonly ReportLeaf[], index: number): MerkleProof {
  if (!Number.isInteger(index) || index < 0 || index >= leaves.length) {
    throw new RangeError(`leaf index ${index} is outside a report of ${leaves.length} leaves`);
  }
  let level = leaves.map(leafHash);
  let i = index;
  const siblings: Uint8Array[] = [];
  while (level.length > 1) {
    const sib = level[i ^ 1];
    if (sib !== undefined) siblings.push(sib);
    const next: Uint8Array[] = [];
    for (let j = 0; j < level.length; j += 2) {
      const a = level[j] as Uint8Array;
      const b = level[j + 1];
      next.push(b === undefined ? a : nodeHash(a, b));
    }
    level = next;
    i = Math.floor(i / 2);
  }
  return { leafIndex: index, leafCount: leaves.length, siblings };
}

/** Whether `proof` places `hash` under `root` (the shape is checked first). */
export function verifyProof(hash: Uint8Array, proof: MerkleProof, root: Uint8Array): boolean {
  if (proof.leafIndex >= proof.leafCount || proof.leafCount > MAX_LEAVES) return false;
  if (proofLength(proof.leafIndex, proof.leafCount) !== proof.siblings.length) return false;
  return equalBytes(
    proof.siblings.reduce((h, s) => nodeHash(h, s), hash),
    root,
  );
}
