// Live test against a real devnet (`sibyl devnet`, started by
// scripts/test.d/35-clients, which passes its devnet.json in SIBYL_DEVNET):
// subscribe to two members with verification, kill the member the stream
// comes from, and check that the subscription resumes on the other member
// with every stored round delivered exactly once, in order, each report
// verified against the committee's group key.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { groupKeys, SibylClient, SibylHttpError, type StreamNotice, type StreamReport, subscribe } from '../src/index.js';

interface Devnet {
  config_digest: string;
  group_key: string;
  suite: string;
  members: { index: number; api_url: string; pid: number | null }[];
}

const path = process.env.SIBYL_DEVNET;
if (!path) throw new Error('set SIBYL_DEVNET to a running devnet.json (scripts/test.d/35-clients does)');
const devnet = JSON.parse(readFileSync(path, 'utf8')) as Devnet;
const keys = groupKeys(
  devnet.suite === 'secp256k1-evm'
    ? { configDigest: devnet.config_digest, secp256k1Evm: devnet.group_key }
    : { configDigest: devnet.config_digest, ed25519: devnet.group_key },
);
const [first, second] = devnet.members.filter((m) => m.pid !== null);
assert.ok(first?.pid && second, 'a devnet of at least two running members');

test('subscribe, lose the member, resume on another: every round once, in order, verified', async () => {
  const notices: StreamNotice[] = [];
  const got: StreamReport[] = [];
  const ctl = new AbortController();
  const deadline = setTimeout(() => ctl.abort(), 60_000);
  let killedAt: bigint | null = null;
  try {
    for await (const r of subscribe({
      endpoints: [first.api_url, second.api_url],
      keys,
      verify: true,
      retryMs: 200,
      signal: ctl.signal,
      onNotice: (n) => notices.push(n),
    })) {
      got.push(r);
      if (killedAt === null && got.length >= 8) {
        killedAt = r.round;
        process.kill(first.pid as number, 'SIGKILL');
        // Reports go on while the consumer is busy: the resume must bring them
        // (replayed by a server that honours Last-Event-ID, else caught up).
        await new Promise((r) => setTimeout(r, 1_500));
      }
      if (got.filter((x) => x.endpoint === second.api_url).length >= 8) break;
    }
  } finally {
    clearTimeout(deadline);
  }
  assert.ok(killedAt !== null, `only ${got.length} reports before the deadline`);
  const onSecond = got.filter((x) => x.endpoint === second.api_url);
  assert.ok(onSecond.length >= 8, `resumed on member 2: ${onSecond.length} reports; notices ${JSON.stringify(notices)}`);
  assert.ok(notices.some((n) => n.kind === 'connected' && n.endpoint === second.api_url && n.detail.startsWith('resuming after round')));
  for (let i = 1; i < got.length; i++) {
    assert.ok((got[i] as StreamReport).round > (got[i - 1] as StreamReport).round, 'rounds strictly increase');
  }
  for (const r of got) {
    assert.deepEqual(r.verified?.suites, [devnet.suite === 'secp256k1-evm' ? 'secp256k1-evm' : 'ed25519']);
    assert.ok(r.leaves.length > 0);
  }
  // Nothing missing: every report member 2 stores in the span was delivered.
  const client = new SibylClient({ endpoints: second.api_url, keys });
  const delivered = new Set(got.map((r) => r.round));
  const from = (got[0] as StreamReport).round;
  const to = (got[got.length - 1] as StreamReport).round;
  let stored = 0;
  for (let r = from; r <= to; r++) {
    try {
      await client.report(r);
    } catch (e) {
      if (e instanceof SibylHttpError && e.code === 'unknown_round') continue;
      throw e;
    }
    stored++;
    assert.ok(delivered.has(r), `round ${r} is stored on member 2 but was not delivered`);
  }
  assert.equal(stored, got.length);
  console.log(
    `live: ${got.length} rounds ${from}..${to}, member 1 killed after round ${killedAt}, ` +
      `${onSecond.length} from member 2 (${got.filter((x) => x.source === 'catch-up').length} by catch-up)`,
  );
});

test('the latest value of every feed verifies on the remaining member', async () => {
  const client = new SibylClient({ endpoints: [first.api_url, second.api_url], keys, timeoutMs: 2_000 });
  const feeds = await client.feeds();
  assert.ok(feeds.length >= 1);
  for (const f of feeds) {
    const l = await client.verifiedLatest(f.feedId);
    assert.equal(l.leaf.price, l.value.price);
    assert.equal(l.value.round, l.report.header.round);
  }
  const page = await client.history(feeds[0]?.feedId as string, { limit: 5 });
  assert.ok(page.points.length > 0);
});
