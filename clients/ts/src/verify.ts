// Consumer-side verification, the same checks in the same order as the
// Rust reference (`sibyl_aggregator::verify`, docs/PROTOCOL.md "Consumer
// verification"): version, config digest, leaf count, one FROST signature
// per suite the consumer requires, then leaf order, the Merkle root and the
// margin root of the commands and margin state (or, for one feed, its proof).
//
//   FROST(Ed25519, SHA-512):      c = SHA-512(R ‖ A ‖ digest) mod L,
//                                 valid iff 8·(z·G − c·A − R) = 0
//   FROST(secp256k1, Keccak-256): c = hash_to_field(XMD<Keccak-256>,
//                                 "FROST-secp256k1-KECCAK256-v1chal", R ‖ PK ‖ digest),
//                                 valid iff z·G − c·PK − R = 0

import { ed25519 } from '@noble/curves/ed25519.js';
import { secp256k1 } from '@noble/curves/secp256k1.js';
import { hash_to_field } from '@noble/curves/abstract/hash-to-curve.js';
import { sha512 } from '@noble/hashes/sha2.js';
import { keccak_256 } from '@noble/hashes/sha3.js';
import {
  headerDigest,
  leafHash,
  MAX_LEAVES,
  marginRoot,
  merkleRoot,
  PROTOCOL_VERSION,
  verifyProof,
} from './encoding.js';
import { bytesToBigInt, bytesToBigIntLE, concat, equalBytes, fromHex, toHex } from './hex.js';
import type { MerkleProof, ReportHeader, ReportLeaf, SignedReport, Suite } from './types.js';

/** The Rust `VerifyError` variants; each failure carries one. */
export type VerifyErrorCode =
  | 'WrongVersion'
  | 'WrongConfigDigest'
  | 'NoGroupKeys'
  | 'BadGroupKey'
  | 'TooManyLeaves'
  | 'LeavesNotSorted'
  | 'RootMismatch'
  | 'CommandsMismatch'
  | 'BadProof'
  | 'MissingSignature'
  | 'MalformedSignature'
  | 'BadSignature';

/** Why a report, a leaf or a key did not verify. */
export class VerifyError extends Error {
  constructor(
    readonly code: VerifyErrorCode,
    message: string,
    readonly suite?: Suite,
  ) {
    super(message);
    this.name = 'VerifyError';
  }
}

/** What a consumer trusts: the committee's config digest and group keys. */
export interface GroupKeys {
  configDigest: Uint8Array;
  /** 32-byte FROST(Ed25519) group key, if reports must carry that signature. */
  ed25519?: Uint8Array;
  /** 33-byte compressed FROST(secp256k1-evm) group key, likewise. */
  secp256k1Evm?: Uint8Array;
}

/**
 * Group keys from hex (with or without `0x`). Checks each key is a valid
 * point; a `BadGroupKey` VerifyError otherwise. Give at least one key.
 */
export function groupKeys(k: { configDigest: string; ed25519?: string; secp256k1Evm?: string }): GroupKeys {
  const configDigest = fromHex(k.configDigest);
  if (configDigest.length !== 32) {
    throw new VerifyError('BadGroupKey', `config digest has ${configDigest.length} bytes, expected 32`);
  }
  const out: GroupKeys = { configDigest };
  if (k.ed25519 !== undefined) {
    out.ed25519 = fromHex(k.ed25519);
    edPoint(out.ed25519, 'ed25519 group key', 'BadGroupKey');
  }
  if (k.secp256k1Evm !== undefined) {
    out.secp256k1Evm = fromHex(k.secp256k1Evm);
    secpPoint(out.secp256k1Evm, 'secp256k1-evm group key', 'BadGroupKey');
  }
  return out;
}

/** The suites a report must be signed with under `keys`. */
export function requiredSuites(keys: GroupKeys): Suite[] {
  const s: Suite[] = [];
  if (keys.ed25519) s.push('ed25519');
  if (keys.secp256k1Evm) s.push('secp256k1-evm');
  return s;
}

/** A report that passed `verifyReport`. */
export interface VerifiedReport {
  report: SignedReport;
  /** The digest the signatures cover. */
  digest: Uint8Array;
  /** The suites whose signatures were checked. */
  suites: Suite[];
}

const ED_L = 2n ** 252n + 27742317777372353535851937790883648493n;
const SECP_N = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;
const SECP_CHALLENGE_DST = 'FROST-secp256k1-KECCAK256-v1chal';

function edPoint(bytes: Uint8Array, what: string, code: VerifyErrorCode, suite?: Suite) {
  try {
    if (bytes.length !== 32) throw new Error(`${bytes.length} bytes, expected 32`);
    const p = ed25519.Point.fromBytes(bytes, false);
    // As frost-ed25519 deserializes an element: canonical, not the identity, prime order.
    if (p.is0()) throw new Error('the identity');
    if (!p.isTorsionFree()) throw new Error('not in the prime-order subgroup');
    return p;
  } catch (e) {
    throw new VerifyError(code, `invalid ${what}: ${(e as Error).message}`, suite);
  }
}

function secpPoint(bytes: Uint8Array, what: string, code: VerifyErrorCode, suite?: Suite) {
  try {
    if (bytes.length !== 33) throw new Error(`${bytes.length} bytes, expected a 33-byte compressed point`);
    return secp256k1.Point.fromBytes(bytes);
  } catch (e) {
    throw new VerifyError(code, `invalid ${what}: ${(e as Error).message}`, suite);
  }
}

function malformed(suite: Suite, reason: string): VerifyError {
  return new VerifyError('MalformedSignature', `${suite} signature is malformed: ${reason}`, suite);
}

function bad(suite: Suite): VerifyError {
  return new VerifyError(
    'BadSignature',
    `${suite} signature does not verify against the group key for this report's digest`,
    suite,
  );
}

function checkEd25519(key: Uint8Array, digest: Uint8Array, sig: Uint8Array): void {
  const suite = 'ed25519';
  if (sig.length !== 64) throw malformed(suite, `${sig.length} bytes, expected 64`);
  const rBytes = sig.subarray(0, 32);
  const r = edPoint(rBytes, 'R', 'MalformedSignature', suite);
  const z = bytesToBigIntLE(sig.subarray(32));
  if (z >= ED_L) throw malformed(suite, 'z is not a canonical scalar');
  const a = edPoint(key, 'ed25519 group key', 'BadGroupKey', suite);
  const c = bytesToBigIntLE(sha512(concat(rBytes, key, digest))) % ED_L;
  const check = ed25519.Point.BASE.multiplyUnsafe(z).subtract(a.multiplyUnsafe(c)).subtract(r);
  if (!check.multiplyUnsafe(8n).is0()) throw bad(suite);
}

/** frost-secp256k1-evm's challenge (H2) for a signature's R, the group key and the digest. */
export function secp256k1EvmChallenge(rCompressed: Uint8Array, key: Uint8Array, digest: Uint8Array): bigint {
  const [[c]] = hash_to_field(concat(rCompressed, key, digest), 1, {
    DST: SECP_CHALLENGE_DST,
    p: SECP_N,
    m: 1,
    k: 128,
    expand: 'xmd',
    hash: keccak_256,
  }) as [[bigint]];
  return c;
}

function checkSecp256k1Evm(key: Uint8Array, digest: Uint8Array, sig: Uint8Array): void {
  const suite = 'secp256k1-evm';
  if (sig.length !== 65) throw malformed(suite, `${sig.length} bytes, expected 65`);
  const rBytes = sig.subarray(0, 33);
  const r = secpPoint(rBytes, 'R', 'MalformedSignature', suite);
  const z = bytesToBigInt(sig.subarray(33));
  if (z >= SECP_N) throw malformed(suite, 'z is not a canonical scalar');
  const pk = secpPoint(key, 'secp256k1-evm group key', 'BadGroupKey', suite);
  const c = secp256k1EvmChallenge(rBytes, key, digest);
  const check = secp256k1.Point.BASE.multiplyUnsafe(z).subtract(pk.multiplyUnsafe(c)).subtract(r);
  if (!check.is0()) throw bad(suite);
}

function checkHeader(h: ReportHeader, keys: GroupKeys): void {
  if (h.version !== PROTOCOL_VERSION) {
    throw new VerifyError(
      'WrongVersion',
      `report version ${h.version} is not supported (expected ${PROTOCOL_VERSION}); upgrade the consumer or the committee`,
    );
  }
  if (!equalBytes(h.configDigest, keys.configDigest)) {
    throw new VerifyError(
      'WrongConfigDigest',
      `report config digest 0x${toHex(h.configDigest)} is not the expected 0x${toHex(keys.configDigest)}; the report belongs to a different committee configuration`,
    );
  }
}

function checkSignatures(
  digest: Uint8Array,
  signatures: Partial<Record<Suite, Uint8Array>>,
  keys: GroupKeys,
): Suite[] {
  const suites = requiredSuites(keys);
  if (suites.length === 0) {
    throw new VerifyError('NoGroupKeys', "no group key is configured; give at least one ciphersuite's group key");
  }
  for (const suite of suites) {
    const sig = signatures[suite];
    if (sig === undefined) {
      throw new VerifyError(
        'MissingSignature',
        `report carries no ${suite} signature, which the committee's keys require`,
        suite,
      );
    }
    if (suite === 'ed25519') checkEd25519(keys.ed25519 as Uint8Array, digest, sig);
    else checkSecp256k1Evm(keys.secp256k1Evm as Uint8Array, digest, sig);
  }
  return suites;
}

/**
 * Verifies a whole report; throws a VerifyError naming the first failure
 * (the Rust reference's order), returns the digest and suites checked.
 */
export function verifyReport(report: SignedReport, keys: GroupKeys): VerifiedReport {
  checkHeader(report.header, keys);
  const leaves = report.leaves;
  if (leaves.length > MAX_LEAVES) {
    throw new VerifyError('TooManyLeaves', `report has ${leaves.length} leaves, more than the maximum ${MAX_LEAVES}`);
  }
  const digest = headerDigest(report.header);
  const suites = checkSignatures(digest, report.signatures, keys);
  for (let i = 1; i < leaves.length; i++) {
    // Feed ids are ASCII, so string order is byte order.
    if ((leaves[i - 1] as ReportLeaf).feedId >= (leaves[i] as ReportLeaf).feedId) {
      throw new VerifyError(
        'LeavesNotSorted',
        `leaf ${i} (${(leaves[i] as ReportLeaf).feedId}) is not in strictly ascending feed-id order; leaves must be sorted and unique`,
      );
    }
  }
  const computed = merkleRoot(leaves);
  if (!equalBytes(computed, report.header.merkleRoot)) {
    throw new VerifyError(
      'RootMismatch',
      `Merkle root mismatch: header says 0x${toHex(report.header.merkleRoot)}, the leaves give 0x${toHex(computed)}`,
    );
  }
  const commands = report.commands ?? [];
  const state = report.marginState;
  const margin = marginRoot(commands, state);
  if (!equalBytes(margin, report.header.marginRoot)) {
    const carried = state === undefined ? 'no margin state' : `the margin state of round ${state.round}`;
    throw new VerifyError(
      'CommandsMismatch',
      `margin root mismatch: header says 0x${toHex(report.header.marginRoot)}, the report's ${commands.length} margin commands and ${carried} give 0x${toHex(margin)}`,
    );
  }
  return { report, digest, suites };
}

/**
 * Verifies one feed: its leaf is under the header's root by `proof`, and the
 * header is signed for every required suite. Returns the signed digest.
 */
export function verifyLeaf(
  header: ReportHeader,
  leaf: ReportLeaf,
  proof: MerkleProof,
  signatures: Partial<Record<Suite, Uint8Array>>,
  keys: GroupKeys,
): Uint8Array {
  checkHeader(header, keys);
  if (!verifyProof(leafHash(leaf), proof, header.merkleRoot)) {
    throw new VerifyError('BadProof', `Merkle proof does not place feed ${leaf.feedId} under the header's root`);
  }
  const digest = headerDigest(header);
  checkSignatures(digest, signatures, keys);
  return digest;
}
