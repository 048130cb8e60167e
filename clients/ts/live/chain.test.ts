// Live test against a devnet that signs with secp256k1-evm (`sibyl devnet
// --chain`, started by scripts/test.d/35-clients; SIBYL_DEVNET = its
// devnet.json): the stream's reports verify under the EVM group key, and the
// SDK's submitFeeds calldata and packed pull payload are byte for byte the member's own
// (`GET /v1/feeds/{id}/update`, `GET /v1/feeds/update?ids=…`).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
  evmSignature,
  groupKeys,
  merkleProof,
  pullPayload,
  SibylClient,
  submitFeedsCalldata,
  subscribe,
  type StreamReport,
  type Json,
} from '../src/index.js';

const path = process.env.SIBYL_DEVNET;
if (!path) throw new Error('set SIBYL_DEVNET to a running `sibyl devnet --chain` devnet.json');
const devnet = JSON.parse(readFileSync(path, 'utf8')) as {
  config_digest: string;
  group_key: string;
  suite: string;
  members: { api_url: string; pid: number | null }[];
};
assert.equal(devnet.suite, 'secp256k1-evm');
const keys = groupKeys({ configDigest: devnet.config_digest, secp256k1Evm: devnet.group_key });
const endpoints = devnet.members.filter((m) => m.pid !== null).map((m) => m.api_url);
const client = new SibylClient({ endpoints, keys });

type Obj = { [k: string]: Json };

/** The calldata and packed payload the SDK builds for `feeds` of `round`, from the verified report. */
async function local(round: bigint, feeds: string[]): Promise<{ calldata: string; payload: string }> {
  const { report } = await client.verifiedReport(round);
  const sig = evmSignature(report.signatures['secp256k1-evm'] as Uint8Array, keys.secp256k1Evm as Uint8Array);
  const proven = feeds.map((id) => {
    const i = report.leaves.findIndex((l) => l.feedId === id);
    assert.ok(i >= 0, `round ${round} has no leaf ${id}`);
    return { leaf: report.leaves[i]!, proof: merkleProof(report.leaves, i) };
  });
  return {
    calldata: submitFeedsCalldata(report.header, sig, proven),
    payload: pullPayload(report.header, sig, proven),
  };
}

test('secp256k1-evm reports verify as they stream', async () => {
  const got: StreamReport[] = [];
  const ctl = new AbortController();
  const t = setTimeout(() => ctl.abort(), 30_000);
  for await (const r of subscribe({ endpoints, keys, verify: true, signal: ctl.signal })) {
    got.push(r);
    if (got.length >= 4) break;
  }
  clearTimeout(t);
  assert.equal(got.length, 4);
  for (const r of got) assert.deepEqual(r.verified?.suites, ['secp256k1-evm']);
});

test('pull calldata and payload equal the member API\'s, one feed and batched', async () => {
  const feeds = (await client.feeds()).map((f) => f.feedId);
  assert.ok(feeds.length >= 2);
  for (const id of feeds) {
    const u = (await client.get(`/v1/feeds/${id}/update`)) as Obj;
    const round = BigInt(u.round as number | bigint);
    assert.deepEqual(await local(round, [id]), { calldata: u.calldata, payload: u.payload }, `${id} of round ${round}`);
  }
  const batch = (await client.get(`/v1/feeds/update?ids=${feeds.join(',')}`)) as Obj;
  const updates = batch.updates as Obj[];
  assert.ok(updates.length >= 1);
  for (const u of updates) {
    const round = BigInt(u.round as number | bigint);
    assert.deepEqual(
      await local(round, u.feeds as string[]),
      { calldata: u.calldata, payload: u.payload },
      `batch of round ${round}`,
    );
  }
});
