// The shared client vectors (aggregator/vectors/client_vectors.json, from the
// Rust reference): every report and leaf case verifies, or fails with the
// same error, as in Rust.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { keccak_256 } from '@noble/hashes/sha3.js';
import {
  commandsRoot,
  encodeHeader,
  marginRoot,
  encodeLeaf,
  groupKeys,
  headerDigest,
  headerFromJson,
  leafFromJson,
  leafHash,
  merkleProof,
  parseJson,
  proofFromJson,
  reportFromJson,
  signaturesFromJson,
  toHex,
  verifyLeaf,
  verifyReport,
  VerifyError,
  type Json,
} from '../src/index.js';

const path =
  process.env.SIBYL_CLIENT_VECTORS ?? new URL('../../../../aggregator/vectors/client_vectors.json', import.meta.url);
const vectors = parseJson(readFileSync(path, 'utf8')) as { [k: string]: Json };
type Case = { [k: string]: Json };

function keysOf(name: string) {
  const k = (vectors.keys as { [k: string]: { [k: string]: string } })[name];
  assert.ok(k, `key set ${name}`);
  return groupKeys({ configDigest: k.config_digest as string, ed25519: k.ed25519, secp256k1Evm: k['secp256k1-evm'] });
}

function outcome(f: () => unknown): string {
  try {
    f();
    return 'valid';
  } catch (e) {
    if (e instanceof VerifyError) return e.code;
    throw e;
  }
}

test('every report case verifies or fails as in Rust', () => {
  const cases = vectors.reports as Case[];
  assert.ok(cases.length >= 15);
  const seen = new Set<string>();
  for (const c of cases) {
    const report = reportFromJson(c.report);
    assert.equal(toHex(headerDigest(report.header)), c.digest, `${c.name}: digest`);
    assert.equal(toHex(encodeHeader(report.header)), c.header_abi, `${c.name}: header ABI`);
    const got = outcome(() => {
      const v = verifyReport(report, keysOf(c.keys as string));
      assert.deepEqual(v.suites, c.suites, `${c.name}: suites`);
    });
    assert.equal(got, c.expected === 'valid' ? 'valid' : c.error, `${c.name}`);
    seen.add(got);
  }
  for (const e of [
    'valid',
    'RootMismatch',
    'CommandsMismatch',
    'BadSignature',
    'WrongConfigDigest',
    'MissingSignature',
    'MalformedSignature',
    'LeavesNotSorted',
    'NoGroupKeys',
  ]) {
    assert.ok(seen.has(e), `no case ends in ${e}`);
  }
});

test('margin roots equal the reference preimages and root', () => {
  const rv = JSON.parse(
    readFileSync(new URL('../../../../aggregator/vectors/report_vectors.json', import.meta.url), 'utf8'),
  ) as { cases: Case[] };
  let withCommands = 0;
  let withState = 0;
  const unhex = (s: string) => Buffer.from(s.startsWith('0x') ? s.slice(2) : s, 'hex');
  for (const c of rv.cases) {
    const json: { [k: string]: Json } = { header: c.header ?? null, leaves: [], signatures: {}, commands: c.commands ?? [] };
    if (c.margin_state !== undefined) json.margin_state = c.margin_state;
    const r = reportFromJson(json);
    const header = (c.header as Case).margin_root;
    assert.equal(toHex(marginRoot(r.commands ?? [], r.marginState), true), header, `${c.name}`);
    const commands = commandsRoot(r.commands ?? []);
    if (c.commands_preimage !== undefined) {
      withCommands++;
      assert.equal(toHex(keccak_256(unhex(c.commands_preimage as string))), toHex(commands), `${c.name}`);
    }
    if (r.marginState === undefined) {
      assert.equal(c.margin_state_preimage, undefined, `${c.name}`);
      assert.equal(toHex(commands, true), header, `${c.name}`);
    } else {
      withState++;
      // "Sibyl margin state v1" ‖ commandsRoot ‖ u64 round ‖ stateRoot, by hand.
      const round = Buffer.alloc(8);
      round.writeBigUInt64BE(r.marginState.round);
      const pre = Buffer.concat([Buffer.from('Sibyl margin state v1'), commands, round, r.marginState.root]);
      assert.equal(toHex(pre, true), c.margin_state_preimage, `${c.name}`);
      assert.equal(toHex(keccak_256(pre), true), header, `${c.name}`);
      assert.notEqual(toHex(commands, true), header, `${c.name}`);
    }
  }
  assert.ok(withCommands >= 1, 'a vector with margin commands');
  assert.ok(withState >= 1, 'a vector with a margin state');
  // A body is hashed as its UTF-8 bytes, its length in bytes.
  const one = commandsRoot([{ origin: 1, nonce: 2n, body: 'é' }]);
  const by = Buffer.concat([Buffer.from('Sibyl margin commands v1'), Buffer.from('0001000000000000000200000002c3a9', 'hex')]);
  assert.equal(toHex(one), toHex(keccak_256(by)));
  assert.equal(toHex(commandsRoot([])), '00'.repeat(32));
  assert.equal(toHex(marginRoot([])), '00'.repeat(32));
  // With a state, even a round without commands has a non-zero margin root.
  const state = { round: 7n, root: new Uint8Array(32).fill(0xab) };
  const byHand = Buffer.concat([Buffer.from('Sibyl margin state v1'), Buffer.alloc(32), Buffer.from('0000000000000007', 'hex'), Buffer.alloc(32, 0xab)]);
  assert.equal(toHex(marginRoot([], state)), toHex(keccak_256(byHand)));
});

test('a report reads its margin state, absent as undefined', () => {
  const cases = vectors.reports as Case[];
  const withState = cases.find((x) => x.name === 'margin-commands-and-state');
  assert.ok(withState);
  const json = (withState.report as Case).margin_state as Case;
  const r = reportFromJson(withState.report);
  assert.ok(r.marginState);
  assert.equal(r.marginState.round, BigInt(json.round as number));
  assert.equal(toHex(r.marginState.root), json.root);
  const plain = cases.find((x) => x.name === 'margin-commands');
  assert.ok(plain);
  assert.equal(reportFromJson(plain.report).marginState, undefined);
  // A consumer that drops the state gets CommandsMismatch, not a pass.
  const dropped = { ...r };
  delete dropped.marginState;
  assert.equal(outcome(() => verifyReport(dropped, keysOf('committee'))), 'CommandsMismatch');
});

test('prices beyond 2^53 are read exactly', () => {
  const c = (vectors.reports as Case[]).find((x) => x.name === 'extreme-values');
  assert.ok(c);
  const r = reportFromJson(c.report);
  assert.equal(r.leaves[0]?.price, -(2n ** 127n));
  assert.equal(r.leaves[0]?.confidence, 2n ** 128n - 1n);
  assert.equal(r.header.round, 2n ** 64n - 1n);
});

test('every leaf case verifies or fails as in Rust', () => {
  const cases = vectors.leaves as Case[];
  let valid = 0;
  for (const c of cases) {
    const header = headerFromJson(c.header);
    const leaf = leafFromJson(c.leaf);
    const proof = proofFromJson(c.proof);
    assert.equal(toHex(encodeLeaf(leaf)), c.leaf_abi, `${c.name}: leaf ABI`);
    assert.equal(toHex(leafHash(leaf)), c.leaf_hash, `${c.name}: leaf hash`);
    const got = outcome(() => {
      const d = verifyLeaf(header, leaf, proof, signaturesFromJson(c.signatures), keysOf(c.keys as string));
      assert.equal(toHex(d), c.digest);
    });
    assert.equal(got, c.expected === 'valid' ? 'valid' : c.error, `${c.name}`);
    if (got === 'valid') valid++;
  }
  assert.equal(valid, 25);
});

test('proofs built locally equal the reference proofs', () => {
  for (const c of vectors.reports as Case[]) {
    if (c.expected !== 'valid') continue;
    const r = reportFromJson(c.report);
    r.leaves.forEach((_, i) => {
      const mine = merkleProof(r.leaves, i);
      const leafCase = (vectors.leaves as Case[]).find(
        (l) => l.name === `${c.name}/${r.leaves[i]?.feedId}`,
      );
      if (!leafCase) return; // the one-suite variants reuse another case's report
      assert.deepEqual(mine, proofFromJson(leafCase.proof));
    });
  }
});

test('a bad group key is refused when the keys are made', () => {
  assert.throws(
    () => groupKeys({ configDigest: '00'.repeat(32), secp256k1Evm: '02' + 'ff'.repeat(32) }),
    (e: unknown) => e instanceof VerifyError && e.code === 'BadGroupKey',
  );
  assert.throws(
    () => groupKeys({ configDigest: '00'.repeat(31), ed25519: '00'.repeat(32) }),
    (e: unknown) => e instanceof VerifyError && e.code === 'BadGroupKey',
  );
});

test('an Ed25519 key or R outside the prime-order subgroup is refused, as frost-ed25519 does', () => {
  // A point of order 8 (a torsion point, valid encoding).
  const torsion = 'c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a';
  assert.throws(
    () => groupKeys({ configDigest: '00'.repeat(32), ed25519: torsion }),
    (e: unknown) => e instanceof VerifyError && e.code === 'BadGroupKey',
  );
  const c = (vectors.leaves as Case[])[0] as Case;
  const sigs = signaturesFromJson(c.signatures);
  const ed = sigs.ed25519 as Uint8Array;
  const bad = Uint8Array.from(ed);
  bad.set(Buffer.from(torsion, 'hex'), 0);
  assert.equal(
    outcome(() =>
      verifyLeaf(headerFromJson(c.header), leafFromJson(c.leaf), proofFromJson(c.proof), { ed25519: bad }, keysOf('ed25519-only')),
    ),
    'MalformedSignature',
  );
});
