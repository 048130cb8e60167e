// Live tests against a real devnet (`sibyl devnet`, started by
// scripts/test.d/35-clients, which passes its devnet.json in SIBYL_DEVNET):
// an owner-signed margin command submitted, replayed and forged; then
// subscribe to two members with verification, kill the member the stream
// comes from, and check that the subscription resumes on the other member
// with every stored round delivered exactly once, in order, each report
// verified against the committee's group key.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
  generateOwnerKey,
  groupKeys,
  signCommand,
  SibylClient,
  SibylHttpError,
  type StreamNotice,
  type StreamReport,
  subscribe,
  toHex,
} from '../src/index.js';

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

// Before the member is killed: self-registration of an owned account by a
// signed create_account; at another member the replay (account_exists), the
// owner's stale nonce and a stranger's signature refused; every member
// showing the owner and nonce.
test('an owner signs margin commands and submits them without a token', async () => {
  const live = devnet.members.filter((m) => m.pid !== null).map((m) => m.api_url);
  const { secretKey, publicKey } = generateOwnerKey();
  const account = 2_000_000_000n + BigInt(Math.floor(Math.random() * 1_000_000_000));
  const client = new SibylClient({ endpoints: live, timeoutMs: 5_000 });
  const signing = await client.marginSigning();
  if (devnet.suite === 'ed25519') assert.equal(toHex(signing.committeeKey), devnet.group_key.replace(/^0x/, ''));
  const create = signCommand(secretKey, signing.committeeKey, account, 1, {
    create_account: { account, owner: toHex(publicKey) },
  });
  const r = await client.submitSigned(create);
  assert.equal(r.status, 201);
  assert.equal(r.account, account);
  const other = new SibylClient({ endpoints: live.slice(1), timeoutMs: 5_000 });
  const refused = (want: string) => (e: unknown) => {
    assert.ok(e instanceof SibylHttpError, String(e));
    assert.equal(`${e.status} ${e.code}`, want, e.message);
    return true;
  };
  // The replay: the account exists now.
  await assert.rejects(other.submitSigned(create), refused('409 account_exists'));
  // The owner's own signature with a nonce not above the account's.
  const withdraw = { withdraw: { account, asset: 'USD', amount: 1n } };
  await assert.rejects(
    other.submitSigned(signCommand(secretKey, signing.committeeKey, account, 1, withdraw)),
    refused('409 stale_nonce'),
  );
  const stranger = generateOwnerKey().secretKey;
  await assert.rejects(other.submitSigned(signCommand(stranger, signing.committeeKey, account, 2, withdraw)), (e: unknown) => {
    assert.ok(e instanceof SibylHttpError, String(e));
    assert.equal(`${e.status} ${e.code}`, '401 bad_signature');
    return true;
  });
  for (const url of live) {
    const one = new SibylClient({ endpoints: url, timeoutMs: 5_000 });
    const deadline = Date.now() + 30_000;
    // 404 until the member's engine took its turn.
    const read = async () =>
      (await one.get(`/v1/margin/accounts/${account}`).catch((e: unknown) => {
        if (e instanceof SibylHttpError && e.status === 404) return {};
        throw e;
      })) as { [k: string]: unknown };
    let a = await read();
    while (a.nonce !== 1 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 250));
      a = await read();
    }
    assert.deepEqual([a.owner, a.nonce], [toHex(publicKey), 1], url);
  }
});

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
