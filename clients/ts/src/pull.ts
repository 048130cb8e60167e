// Pull calldata for the on-chain consumer: `SibylFeed.submitFeeds` (ABI in
// contracts/abi/SibylFeed.json, docs/CONTRACTS.md "Pull payloads"). This is
// the one place that knows the call's layout; it encodes the same bytes as
// the API's `GET /v1/feeds/{id}/update` (`calldata`).
//
//   submitFeeds(ReportHeader header, Signature sig, Leaf[] leaves, bytes32[][] proofs)
//   head:  header (5 words, static tuple inline) ‖ sig (4 words inline)
//          ‖ offset(leaves) ‖ offset(proofs)
//   tail:  leaves: n ‖ n × 13 words          (Leaf is a static tuple)
//          proofs: m ‖ m offsets ‖ per proof: k ‖ k words

import { secp256k1 } from '@noble/curves/secp256k1.js';
import { keccak_256 } from '@noble/hashes/sha3.js';
import { encodeHeader, encodeLeaf } from './encoding.js';
import { bytesToBigInt, concat, toHex, word } from './hex.js';
import type { MerkleProof, ReportHeader, ReportLeaf } from './types.js';

/** The function's canonical signature, as the API reports it in `function`. */
export const SUBMIT_FEEDS_SIGNATURE =
  'submitFeeds((uint8,bytes32,uint64,uint64,bytes32),(uint256,uint256,uint256,uint256),(bytes32,int256,uint256,uint16,uint64,int256,int256,uint16,uint8,uint16,int256,uint256,uint64)[],bytes32[][])';

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
  const headWords = 5n + 4n + 2n;
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
