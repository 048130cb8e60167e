// The submitFeeds encoder against an independent ABI encoder (viem, with the
// committed contract ABI) for every valid vector report and leaf subsets.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { decodeFunctionData, encodeFunctionData, encodePacked, type Abi } from 'viem';
import {
  evmSignature,
  merkleProof,
  parseJson,
  pullPayload,
  reportFromJson,
  SUBMIT_FEEDS_SELECTOR,
  submitFeedsCalldata,
  toHex,
  type Json,
  LEAF_STATUSES,
} from '../src/index.js';

const root = new URL('../../../../', import.meta.url);
const abi = JSON.parse(readFileSync(new URL('contracts/abi/SibylFeed.json', root), 'utf8')) as Abi;
const vectors = parseJson(readFileSync(new URL('aggregator/vectors/client_vectors.json', root), 'utf8')) as {
  [k: string]: Json;
};
const evmKey = (vectors.keys as { [k: string]: { [k: string]: string } }).committee?.['secp256k1-evm'] as string;

const hex32 = (b: Uint8Array) => toHex(b, true) as `0x${string}`;

test('submitFeeds calldata equals viem encoding of the contract ABI', () => {
  let checked = 0;
  for (const c of vectors.reports as { [k: string]: Json }[]) {
    if (c.expected !== 'valid' || c.keys !== 'committee') continue;
    const r = reportFromJson(c.report);
    const sig = evmSignature(r.signatures['secp256k1-evm'] as Uint8Array, Buffer.from(evmKey, 'hex'));
    // All leaves, then every other leaf (proofs of non-adjacent leaves).
    for (const idx of [r.leaves.map((_, i) => i), r.leaves.map((_, i) => i).filter((i) => i % 2 === 0)]) {
      const feeds = idx.map((i) => ({ leaf: r.leaves[i]!, proof: merkleProof(r.leaves, i) }));
      const mine = submitFeedsCalldata(r.header, sig, feeds);
      const theirs = encodeFunctionData({
        abi,
        functionName: 'submitFeeds',
        args: [
          {
            version: r.header.version,
            configDigest: hex32(r.header.configDigest),
            round: r.header.round,
            timestampMs: r.header.timestampMs,
            merkleRoot: hex32(r.header.merkleRoot),
            marginRoot: hex32(r.header.marginRoot),
          },
          sig,
          feeds.map(({ leaf: l }) => ({
            feedId: hex32(Buffer.concat([Buffer.from(l.feedId), Buffer.alloc(32 - l.feedId.length)])),
            price: l.price,
            confidence: l.confidence,
            numObservations: l.numObservations,
            observedAtMs: l.observedAtMs,
            bid: l.bid,
            ask: l.ask,
            venues: l.venues,
            status: LEAF_STATUSES.indexOf(l.status),
            flags: l.flags,
            ema: l.ema,
            emaConfidence: l.emaConfidence,
            volatility: l.volatility,
          })),
          feeds.map((f) => f.proof.siblings.map(hex32)),
        ],
      } as never);
      assert.equal(mine, theirs, `${c.name}: ${idx.length} feeds`);
      assert.equal(mine.slice(0, 10), toHex(SUBMIT_FEEDS_SELECTOR, true));
      const decoded = decodeFunctionData({ abi, data: mine as `0x${string}` });
      assert.equal(decoded.functionName, 'submitFeeds');
      checked++;
    }
  }
  assert.ok(checked >= 8, `${checked} calls checked`);
});

test('the contract signature fields match the reference vectors', () => {
  const rv = JSON.parse(readFileSync(new URL('aggregator/vectors/report_vectors.json', root), 'utf8'));
  for (const c of rv.cases) {
    const s = c.signatures.secp256k1_evm;
    const sig = evmSignature(Buffer.from(s.signature.slice(2), 'hex'), Buffer.from(evmKey, 'hex'));
    assert.equal(sig.rx, BigInt(s.r_x));
    assert.equal(sig.ry, BigInt(s.r_y));
    assert.equal(sig.z, BigInt(s.z));
    assert.equal(sig.groupKeyX, BigInt(rv.committee.secp256k1_evm.public_key_x));
  }
});

test('the packed pull payload equals viem encodePacked of its documented layout', () => {
  let checked = 0;
  for (const c of vectors.reports as { [k: string]: Json }[]) {
    if (c.expected !== 'valid' || c.keys !== 'committee') continue;
    const r = reportFromJson(c.report);
    const sig = evmSignature(r.signatures['secp256k1-evm'] as Uint8Array, Buffer.from(evmKey, 'hex'));
    for (const idx of [r.leaves.map((_, i) => i), r.leaves.map((_, i) => i).filter((i) => i % 2 === 1)]) {
      if (idx.length === 0) continue;
      const feeds = idx.map((i) => ({ leaf: r.leaves[i]!, proof: merkleProof(r.leaves, i) }));
      const types: string[] = [
        'uint8',
        'bytes32',
        'uint64',
        'uint64',
        'bytes32',
        'uint256',
        'uint256',
        'uint256',
        'uint256',
      ];
      const values: unknown[] = [
        r.header.version,
        hex32(r.header.configDigest),
        r.header.round,
        r.header.timestampMs,
        hex32(r.header.marginRoot),
        sig.groupKeyX,
        sig.rx,
        sig.ry,
        sig.z,
      ];
      for (const { leaf: l, proof } of feeds) {
        types.push('uint8', 'string', 'int128', 'uint128', 'uint16', 'uint64', 'int128', 'int128');
        values.push(l.feedId.length, l.feedId, l.price, l.confidence, l.numObservations, l.observedAtMs, l.bid, l.ask);
        types.push('uint16', 'uint8', 'uint16', 'int128', 'uint128', 'uint64', 'uint8', 'bytes32[]');
        values.push(
          l.venues,
          LEAF_STATUSES.indexOf(l.status),
          l.flags,
          l.ema,
          l.emaConfidence,
          l.volatility,
          proof.siblings.length,
          proof.siblings.map(hex32),
        );
      }
      assert.equal(pullPayload(r.header, sig, feeds), encodePacked(types as never, values as never), `${c.name}`);
      checked++;
    }
  }
  assert.ok(checked >= 6, `${checked} payloads checked`);
  assert.throws(() => pullPayload({} as never, {} as never, []), /at least one leaf/);
});
