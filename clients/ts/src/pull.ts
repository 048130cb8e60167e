// Pull calldata for the on-chain consumer: `SibylFeed.submitFeeds` (ABI in
// contracts/abi/SibylFeed.json, docs/CONTRACTS.md "Pull payloads"). This is
// the one place that knows the call's layout; it encodes the same bytes as
// the API's `GET /v1/feeds/{id}/update` (`calldata`).
//
//   submitFeeds(ReportHeader header, Signature sig, Leaf[] leaves, bytes32[][] proofs)
//   head:  header (6 words, static tuple inline) ‖ sig (4 words inline)
//          ‖ offset(leaves) ‖ offset(proofs)
//   tail:  leaves: n ‖ n × 13 words          (Leaf is a static tuple)
//          proofs: m ‖ m offsets ‖ per proof: k ‖ k words

import { secp256k1 } from '@noble/curves/secp256k1.js';
import { keccak_256 } from '@noble/hashes/sha3.js';
import { encodeHeader, encodeLeaf } from './encoding.js';
import { bytesToBigInt, concat, toHex, word } from './hex.js';
import { LEAF_STATUSES, type MerkleProof, type ReportHeader, type ReportLeaf } from './types.js';

/** The function's canonical signature, as the API reports it in `function`. */
export const SUBMIT_FEEDS_SIGNATURE =
  'submitFeeds((uint8,bytes32,uint64,uint64,bytes32,bytes32),(uint256,uint256,uint256,uint256),(bytes32,int256,uint256,uint16,uint64,int256,int256,uint16,uint8,uint16,int256,uint256,uint64)[],bytes32[][])';

/** Its 4-byte selector. */
export const SUBMIT_FEEDS_SELECTOR = keccak_256(new TextEncoder().encode(SUBMIT_FEEDS_SIGNATURE)).subarray(0, 4);

/** The contract's `Signature` struct: the group key's x and the signature's R and z. */
export interface EvmSignature {
  groupKeyX: bigint;
  rx: bigint;
  ry: bigint;
  z: bigint;
}

/**
 * The contract's `Signature` from a FROST(secp256k1-evm) signature (33-byte
 * compressed R ‖ 32-byte z) and the 33-byte compressed group key.
 */
export function evmSignature(signature: Uint8Array, groupKey: Uint8Array): EvmSignature {
  if (signature.length !== 65) {
    throw new RangeError(`a secp256k1-evm signature has 65 bytes, got ${signature.length}`);
  }
  const r = secp256k1.Point.fromBytes(signature.subarray(0, 33)).toAffine();
  const pk = secp256k1.Point.fromBytes(groupKey).toAffine();
  return { groupKeyX: pk.x, rx: r.x, ry: r.y, z: bytesToBigInt(signature.subarray(33)) };
}

/** One feed of the call: its leaf and the leaf's Merkle proof under the header's root. */
export interface ProvenLeaf {
  leaf: ReportLeaf;
  proof: MerkleProof;
}

/** `submitFeeds(header, sig, leaves, proofs)` calldata, selector first, as `0x…` hex. */
export function submitFeedsCalldata(header: ReportHeader, sig: EvmSignature, feeds: readonly ProvenLeaf[]): string {
  if (feeds.length === 0) throw new RangeError('submitFeeds needs at least one leaf (the contract refuses NoLeaves)');
  const n = BigInt(feeds.length);
  const headWords = 6n + 4n + 2n;
  const leavesAt = headWords * 32n;
  const leavesBody = concat(word(n), ...feeds.map((f) => encodeLeaf(f.leaf)));
  const proofsAt = leavesAt + BigInt(leavesBody.length);
  // Each proof's offset counts from the word after the outer length.
  const offsets: Uint8Array[] = [];
  const bodies: Uint8Array[] = [];
  let at = n * 32n;
  for (const f of feeds) {
    offsets.push(word(at));
    const body = concat(word(BigInt(f.proof.siblings.length)), ...f.proof.siblings);
    bodies.push(body);
    at += BigInt(body.length);
  }
  const data = concat(
    SUBMIT_FEEDS_SELECTOR,
    encodeHeader(header),
    word(sig.groupKeyX),
    word(sig.rx),
    word(sig.ry),
    word(sig.z),
    word(leavesAt),
    word(proofsAt),
    leavesBody,
    word(n),
    ...offsets,
    ...bodies,
  );
  return toHex(data, true);
}

/** `v` as `bytes` big-endian bytes (two's complement when `signed`); throws if it does not fit. */
function fixed(v: bigint, bytes: number, signed: boolean, what: string): Uint8Array {
  const bits = BigInt(bytes * 8);
  const lo = signed ? -(1n << (bits - 1n)) : 0n;
  const hi = signed ? (1n << (bits - 1n)) - 1n : (1n << bits) - 1n;
  if (v < lo || v > hi) throw new RangeError(`${what} ${v} does not fit ${signed ? 'int' : 'uint'}${bits}`);
  const m = v < 0n ? (1n << bits) + v : v;
  return word(m).subarray(32 - bytes);
}

/**
 * The packed pull payload of `SibylFeed.updateFeeds(bytes)` and the SibylPull
 * library (docs/CONTRACTS.md "Pull payloads"; the API's `payload`), as `0x…` hex:
 *
 *   version u8 ‖ configDigest ‖ round u64 ‖ timestampMs u64 ‖ marginRoot
 *   ‖ groupKeyX ‖ rx ‖ ry ‖ z
 *   ‖ per feed: idLength u8 ‖ id ‖ price i128 ‖ confidence u128 ‖ numObservations u16
 *     ‖ observedAtMs u64 ‖ bid i128 ‖ ask i128 ‖ venues u16 ‖ status u8 ‖ flags u16
 *     ‖ ema i128 ‖ emaConfidence u128 ‖ volatility u64 ‖ depth u8 ‖ siblings
 *
 * No Merkle root (the contract derives it from the proofs; the margin root, which
 * it cannot derive, is sent); big-endian, no padding.
 */
export function pullPayload(header: ReportHeader, sig: EvmSignature, feeds: readonly ProvenLeaf[]): string {
  if (feeds.length === 0) throw new RangeError('a pull payload needs at least one leaf (the contract refuses NoLeaves)');
  const parts: Uint8Array[] = [
    fixed(BigInt(header.version), 1, false, 'version'),
    header.configDigest,
    fixed(header.round, 8, false, 'round'),
    fixed(header.timestampMs, 8, false, 'timestampMs'),
    header.marginRoot,
    word(sig.groupKeyX),
    word(sig.rx),
    word(sig.ry),
    word(sig.z),
  ];
  for (const { leaf: l, proof } of feeds) {
    const id = new TextEncoder().encode(l.feedId);
    if (id.length === 0 || id.length > 32) throw new RangeError(`feed id ${l.feedId} must have 1 to 32 bytes`);
    parts.push(
      Uint8Array.of(id.length),
      id,
      fixed(l.price, 16, true, 'price'),
      fixed(l.confidence, 16, false, 'confidence'),
      fixed(BigInt(l.numObservations), 2, false, 'numObservations'),
      fixed(l.observedAtMs, 8, false, 'observedAtMs'),
      fixed(l.bid, 16, true, 'bid'),
      fixed(l.ask, 16, true, 'ask'),
      fixed(BigInt(l.venues), 2, false, 'venues'),
      Uint8Array.of(LEAF_STATUSES.indexOf(l.status)),
      fixed(BigInt(l.flags), 2, false, 'flags'),
      fixed(l.ema, 16, true, 'ema'),
      fixed(l.emaConfidence, 16, false, 'emaConfidence'),
      fixed(l.volatility, 8, false, 'volatility'),
      Uint8Array.of(proof.siblings.length),
      ...proof.siblings,
    );
  }
  return toHex(concat(...parts), true);
}
