// The report and its parts as the SDK holds them (integers as bigint,
// bytes as Uint8Array), and their readers from the HTTP API's JSON
// (docs/PROTOCOL.md, "Leaf" and "Header"; docs/API.md).

import { fromHex } from './hex.js';
import type { Json } from './json.js';

/** A FROST ciphersuite the committee signs with. */
export type Suite = 'ed25519' | 'secp256k1-evm';

/** A leaf's headline status; `flags` say why. */
export type LeafStatus = 'ok' | 'degraded' | 'stale' | 'halted' | 'market_closed';

/** Status codes in the ABI/wire encodings, in order. */
export const LEAF_STATUSES: readonly LeafStatus[] = ['ok', 'degraded', 'stale', 'halted', 'market_closed'];

/** Flag bit names, bit 0 first (docs/PROTOCOL.md, "Status and flags"). */
export const FLAG_NAMES = [
  'few_venues',
  'wide_confidence',
  'peg_departed',
  'out_of_band',
  'unconfirmed_jump',
  'stale',
  'halted',
  'market_closed',
] as const;

/** The signed part of a report. */
export interface ReportHeader {
  version: number;
  configDigest: Uint8Array;
  round: bigint;
  timestampMs: bigint;
  merkleRoot: Uint8Array;
  /**
   * `marginRoot(commands, marginState)` of the report's margin data: all zero
   * when it carries neither commands nor a margin state.
   */
  marginRoot: Uint8Array;
}

/** One feed's leaf. Prices are fixed-point integers with the feed's decimals. */
export interface ReportLeaf {
  feedId: string;
  price: bigint;
  confidence: bigint;
  numObservations: number;
  observedAtMs: bigint;
  bid: bigint;
  ask: bigint;
  venues: number;
  status: LeafStatus;
  flags: number;
  ema: bigint;
  emaConfidence: bigint;
  /** Annualised, 9 decimals (1e9 = 100 %). */
  volatility: bigint;
}

/** A margin command the committee ordered into a report (opaque to verification). */
export interface MarginCommand {
  /** The member index that offered it. */
  origin: number;
  /** The origin's number for it. */
  nonce: bigint;
  /** The command, as JSON text. */
  body: string;
}

/**
 * The margin engine's state root after a round, which every signer of the
 * report computed and attested; account proofs verify against `root`.
 */
export interface MarginCheckpoint {
  /** The state is the one after this round's report (its prices, then its commands). */
  round: bigint;
  /** The engine's state root (docs/MARGIN.md, "State root"). */
  root: Uint8Array;
}

/** A report with its leaves (ascending feed id) and one signature per suite. */
export interface SignedReport {
  header: ReportHeader;
  leaves: ReportLeaf[];
  signatures: Partial<Record<Suite, Uint8Array>>;
  /** The round's margin commands in report order (none: absent or empty). */
  commands?: MarginCommand[];
  /** The margin state root the report carries, if any; committed by `header.marginRoot`. */
  marginState?: MarginCheckpoint;
}

/** Inclusion proof of one leaf: sibling hashes from the leaf up. */
export interface MerkleProof {
  leafIndex: number;
  leafCount: number;
  siblings: Uint8Array[];
}

/** Thrown when the API's JSON does not have the shape this SDK reads. */
export class SibylFormatError extends Error {
  constructor(message: string) {
    super(`${message}; is the endpoint a Sibyl API of a compatible version?`);
    this.name = 'SibylFormatError';
  }
}

type Obj = { [key: string]: Json };

/** `v` as an object, or a SibylFormatError naming `what`. */
export function obj(v: Json | undefined, what: string): Obj {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) {
    throw new SibylFormatError(`${what} is not a JSON object`);
  }
  return v;
}

/** `v` (a JSON integer, bigint or decimal string) as a bigint. */
export function int(v: Json | undefined, what: string): bigint {
  if (typeof v === 'bigint') return v;
  if (typeof v === 'number' && Number.isInteger(v)) return BigInt(v);
  if (typeof v === 'string' && /^-?[0-9]+$/.test(v)) return BigInt(v);
  throw new SibylFormatError(`${what} is not an integer (got ${JSON.stringify(String(v))})`);
}

function small(v: Json | undefined, what: string, max: number): number {
  const n = int(v, what);
  if (n < 0n || n > BigInt(max)) throw new SibylFormatError(`${what} = ${n} is outside 0..=${max}`);
  return Number(n);
}

function bytes(v: Json | undefined, what: string, len?: number): Uint8Array {
  if (typeof v !== 'string') throw new SibylFormatError(`${what} is not a hex string`);
  let b: Uint8Array;
  try {
    b = fromHex(v);
  } catch {
    throw new SibylFormatError(`${what} is not a hex string`);
  }
  if (len !== undefined && b.length !== len) {
    throw new SibylFormatError(`${what} has ${b.length} bytes, expected ${len}`);
  }
  return b;
}

function str(v: Json | undefined, what: string): string {
  if (typeof v !== 'string') throw new SibylFormatError(`${what} is not a string`);
  return v;
}

/** A `ReportHeader` from its API JSON form. */
export function headerFromJson(v: Json | undefined): ReportHeader {
  const o = obj(v, 'header');
  return {
    version: small(o.version, 'header.version', 255),
    configDigest: bytes(o.config_digest, 'header.config_digest', 32),
    round: int(o.round, 'header.round'),
    timestampMs: int(o.timestamp_ms, 'header.timestamp_ms'),
    merkleRoot: bytes(o.merkle_root, 'header.merkle_root', 32),
    // absent: zero, as the Rust reader defaults it
    marginRoot: o.margin_root === undefined ? new Uint8Array(32) : bytes(o.margin_root, 'header.margin_root', 32),
  };
}

function status(v: Json | undefined, what: string): LeafStatus {
  if (v === undefined) return 'ok';
  if (typeof v === 'string' && (LEAF_STATUSES as readonly string[]).includes(v)) return v as LeafStatus;
  if (typeof v === 'number' && LEAF_STATUSES[v] !== undefined) return LEAF_STATUSES[v];
  throw new SibylFormatError(`${what} is not a leaf status (got ${JSON.stringify(v)})`);
}

/** Flags as a bit set: from a number or from the API's list of names. */
function flagBits(v: Json | undefined, what: string): number {
  if (v === undefined) return 0;
  if (Array.isArray(v)) {
    let bits = 0;
    for (const name of v) {
      const i = FLAG_NAMES.indexOf(name as (typeof FLAG_NAMES)[number]);
      if (i < 0) throw new SibylFormatError(`${what} names an unknown flag ${JSON.stringify(name)}`);
      bits |= 1 << i;
    }
    return bits;
  }
  return small(v, what, 0xffff);
}

/**
 * A leaf from the API's JSON: a report's serde leaf (numbers, numeric status
 * names) or a stream/feed value (decimal strings, `null` bid/ask when unknown).
 * Fields a leaf may omit default as the Rust reader does.
 */
export function leafFromJson(v: Json | undefined, what = 'leaf'): ReportLeaf {
  const o = obj(v, what);
  const opt = (k: string) => (o[k] === undefined || o[k] === null ? 0n : int(o[k], `${what}.${k}`));
  const feedId = str(o.feed_id, `${what}.feed_id`);
  if (!/^[A-Z0-9._-]{1,32}$/.test(feedId)) {
    throw new SibylFormatError(`${what}.feed_id ${JSON.stringify(feedId)} is not 1..=32 characters of [A-Z0-9-_.]`);
  }
  return {
    feedId,
    price: int(o.price, `${what}.price`),
    confidence: int(o.confidence, `${what}.confidence`),
    numObservations: small(o.num_observations, `${what}.num_observations`, 0xffff),
    observedAtMs: int(o.observed_at_ms, `${what}.observed_at_ms`),
    bid: opt('bid'),
    ask: opt('ask'),
    venues: o.venues === undefined ? 0 : small(o.venues, `${what}.venues`, 0xffff),
    status: status(o.status, `${what}.status`),
    flags: flagBits(o.flags, `${what}.flags`),
    ema: opt('ema'),
    emaConfidence: opt('ema_confidence'),
    volatility: opt('volatility'),
  };
}

/** Suite → signature from a report's `signatures` object. */
export function signaturesFromJson(v: Json | undefined): Partial<Record<Suite, Uint8Array>> {
  const o = obj(v, 'signatures');
  const out: Partial<Record<Suite, Uint8Array>> = {};
  for (const [k, s] of Object.entries(o)) {
    if (k !== 'ed25519' && k !== 'secp256k1-evm') continue; // a suite this SDK does not know
    out[k] = bytes(s, `signatures.${k}`);
  }
  return out;
}

/** A `MarginCommand` from its API JSON form (`origin`, `nonce`, `body`). */
export function commandFromJson(v: Json | undefined, what = 'command'): MarginCommand {
  const o = obj(v, what);
  const nonce = int(o.nonce, `${what}.nonce`);
  if (nonce < 0n || nonce >= 2n ** 64n) throw new SibylFormatError(`${what}.nonce = ${nonce} is outside u64`);
  return {
    origin: small(o.origin, `${what}.origin`, 0xffff),
    nonce,
    body: str(o.body, `${what}.body`),
  };
}

/** A `MarginCheckpoint` from its API JSON form (`round`, `root`). */
export function marginCheckpointFromJson(v: Json | undefined, what = 'margin_state'): MarginCheckpoint {
  const o = obj(v, what);
  const round = int(o.round, `${what}.round`);
  if (round < 0n || round >= 2n ** 64n) throw new SibylFormatError(`${what}.round = ${round} is outside u64`);
  return { round, root: bytes(o.root, `${what}.root`, 32) };
}

/** A `SignedReport` from its API JSON form (`report` of `/v1/reports/{round}`). */
export function reportFromJson(v: Json | undefined): SignedReport {
  const o = obj(v, 'report');
  if (!Array.isArray(o.leaves)) throw new SibylFormatError('report.leaves is not a list');
  if (o.commands !== undefined && !Array.isArray(o.commands)) {
    throw new SibylFormatError('report.commands is not a list');
  }
  const report: SignedReport = {
    header: headerFromJson(o.header),
    leaves: o.leaves.map((l, i) => leafFromJson(l, `report.leaves[${i}]`)),
    signatures: signaturesFromJson(o.signatures),
    commands: (o.commands ?? []).map((c, i) => commandFromJson(c, `report.commands[${i}]`)),
  };
  // absent (or null): no margin state, as the Rust reader defaults it
  if (o.margin_state !== undefined && o.margin_state !== null) {
    report.marginState = marginCheckpointFromJson(o.margin_state, 'report.margin_state');
  }
  return report;
}

/** A `MerkleProof` from its API JSON form (`leaf_index`, `leaf_count`, `siblings`). */
export function proofFromJson(v: Json | undefined): MerkleProof {
  const o = obj(v, 'proof');
  if (!Array.isArray(o.siblings)) throw new SibylFormatError('proof.siblings is not a list');
  return {
    leafIndex: small(o.leaf_index, 'proof.leaf_index', 0xffffffff),
    leafCount: small(o.leaf_count, 'proof.leaf_count', 0xffffffff),
    siblings: o.siblings.map((s, i) => bytes(s, `proof.siblings[${i}]`, 32)),
  };
}
