// Owner-signed margin commands against the Rust reference's vectors
// (daemon/margin/tests/vectors/signed_commands.json, written by
// `cargo test -p sibyl-margin --test signing_vectors`): the same signed
// bytes, signature and envelope text; and the client's signing and submit
// routes against a local server.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  commandText,
  envelopeJson,
  fromHex,
  generateOwnerKey,
  ownerPublicKey,
  parseJson,
  SIGNED_COMMAND_DOMAIN_TEXT,
  SibylClient,
  SibylFormatError,
  SibylHttpError,
  signCommand,
  signedCommandBytes,
  toHex,
  verifySignedCommand,
  type Json,
} from '../src/index.js';

const path =
  process.env.SIBYL_SIGNING_VECTORS ??
  new URL('../../../../daemon/margin/tests/vectors/signed_commands.json', import.meta.url);
const vectors = parseJson(readFileSync(path, 'utf8')) as { domain: string; cases: { [k: string]: Json }[] };

test('the vectors are the domain this SDK signs, with every kind of case', () => {
  assert.equal(vectors.domain, SIGNED_COMMAND_DOMAIN_TEXT);
  assert.ok(vectors.cases.length >= 3);
  // Ids beyond 2^53 are parsed exactly (a double would lose them).
  assert.ok(vectors.cases.some((c) => typeof c.account === 'bigint'));
});

for (const c of vectors.cases) {
  test(`vector ${String(c.name)}: signed bytes, signature, envelope`, () => {
    const account = BigInt(c.account as number | bigint);
    const nonce = BigInt(c.nonce as number | bigint);
    const command = c.command as string;
    const bytes = signedCommandBytes(c.committee_key as string, account, nonce, command);
    assert.equal(toHex(bytes), c.signed_bytes);
    assert.equal(toHex(ownerPublicKey(c.secret_key as string)), c.owner);
    const s = signCommand(fromHex(c.secret_key as string), fromHex(c.committee_key as string), account, nonce, command);
    assert.equal(toHex(s.signature), c.signature);
    assert.equal(envelopeJson(s), c.envelope);
    assert.ok(verifySignedCommand(s, c.owner as string, c.committee_key as string));
    // Not for another committee, another nonce, or an edited command.
    assert.ok(!verifySignedCommand(s, c.owner as string, '5b'.repeat(32)));
    assert.ok(!verifySignedCommand({ ...s, nonce: nonce + 1n }, c.owner as string, c.committee_key as string));
    assert.ok(!verifySignedCommand({ ...s, command: `${command} ` }, c.owner as string, c.committee_key as string));
  });
}

test('a command value is written with exact integers and signs like its text', () => {
  const c = vectors.cases.find((x) => x.name === 'withdraw-ed25519-committee');
  assert.ok(c);
  const value = { withdraw: { account: 40n, asset: 'USD', amount: 250_000_000n } };
  assert.equal(commandText(value), c.command);
  const s = signCommand(c.secret_key as string, c.committee_key as string, 40, 3, value);
  assert.equal(toHex(s.signature), c.signature);
  assert.equal(commandText({ a: [1, null, true, 'é"'], b: 18446744073709551615n }), '{"a":[1,null,true,"é\\""],"b":18446744073709551615}');
  assert.throws(() => commandText({ amount: 2 ** 60 }), RangeError);
});

test('out-of-range inputs are refused, not signed', () => {
  const secret = generateOwnerKey().secretKey;
  const key = '5c'.repeat(32);
  assert.throws(() => signedCommandBytes(key, -1, 1, '{}'), RangeError);
  assert.throws(() => signedCommandBytes(key, 1n << 64n, 1, '{}'), RangeError);
  assert.throws(() => signedCommandBytes(key, 1, 2 ** 53, '{}'), RangeError);
  assert.throws(() => signedCommandBytes('', 1, 1, '{}'), RangeError);
  assert.throws(() => signedCommandBytes('00'.repeat(65), 1, 1, '{}'), RangeError);
  assert.throws(() => signedCommandBytes('zz', 1, 1, '{}'), TypeError);
  assert.throws(() => signedCommandBytes(key, 1, 1, '"\uD800"'), TypeError);
  assert.throws(() => signCommand(secret.slice(0, 31), key, 1, 1, '{}'), RangeError);
  // The length byte and a 64-byte key (the longest).
  const long = signedCommandBytes('ab'.repeat(64), 1, 2, '{}');
  assert.equal(long[SIGNED_COMMAND_DOMAIN_TEXT.length], 64);
  assert.equal(long.length, 23 + 1 + 64 + 16 + 2);
});

test('a fresh owner key signs what it verifies', () => {
  const { secretKey, publicKey } = generateOwnerKey();
  assert.deepEqual(ownerPublicKey(secretKey), publicKey);
  const s = signCommand(secretKey, '02'.repeat(33), 7, 1, { create_account: { account: 7, owner: toHex(publicKey) } });
  assert.ok(verifySignedCommand(s, publicKey, '02'.repeat(33)));
  assert.ok(!verifySignedCommand(s, generateOwnerKey().publicKey, '02'.repeat(33)));
});

async function body(req: IncomingMessage): Promise<string> {
  const parts: Buffer[] = [];
  for await (const p of req) parts.push(p as Buffer);
  return Buffer.concat(parts).toString('utf8');
}

test('marginSigning and submitSigned: the routes, the exact body, typed errors, failover on 5xx', async () => {
  const c = vectors.cases.find((x) => x.name === 'close-large-ids-text-as-sent');
  assert.ok(c);
  const posted: string[] = [];
  let domain = SIGNED_COMMAND_DOMAIN_TEXT;
  let answer: [number, string] = [200, '{"account":18446744073709551615,"events":[{"kind":"closed"}],"health":null}'];
  const server = createServer((req, res) => {
    void (async () => {
      let status = 404;
      let text = '{"error":{"code":"no_route","message":"none"}}';
      if (req.method === 'GET' && req.url === '/v1/margin/signing') {
        status = 200;
        text = JSON.stringify({ domain, committee_key: c.committee_key, signed_bytes: 'domain ‖ …' });
      } else if (req.method === 'POST' && req.url === '/v1/margin/signed') {
        assert.equal(req.headers['content-type'], 'application/json');
        posted.push(await body(req));
        [status, text] = answer;
      }
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(text);
    })();
  });
  const down = createServer((_req, res) => {
    res.writeHead(503, { 'content-type': 'application/json' });
    res.end('{"error":{"code":"busy","message":"1,024 commands wait"}}');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  await new Promise<void>((r) => down.listen(0, '127.0.0.1', r));
  const url = (s: typeof server) => `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
  try {
    const client = new SibylClient({ endpoints: [url(down), url(server)], timeoutMs: 2_000 });
    const signing = await client.marginSigning();
    assert.equal(toHex(signing.committeeKey), c.committee_key);
    const s = signCommand(
      c.secret_key as string,
      signing.committeeKey,
      BigInt(c.account as bigint),
      BigInt(c.nonce as bigint),
      c.command as string,
    );
    const r = await client.submitSigned(s);
    assert.equal(r.endpoint, url(server));
    assert.equal(r.status, 200);
    assert.equal(r.account, 18446744073709551615n);
    assert.deepEqual(r.events, [{ kind: 'closed' }]);
    assert.deepEqual(posted, [c.envelope]);

    answer = [409, '{"error":{"code":"stale_nonce","message":"nonce 9007199254740993 is not above the current nonce 9007199254740993"}}'];
    await assert.rejects(client.submitSigned(s), (e: unknown) => {
      assert.ok(e instanceof SibylHttpError);
      assert.equal(e.status, 409);
      assert.equal(e.code, 'stale_nonce');
      return true;
    });
    answer = [401, '{"error":{"code":"bad_signature","message":"the signature does not verify under the owner key"}}'];
    await assert.rejects(client.submitSigned(s), (e: unknown) => e instanceof SibylHttpError && e.code === 'bad_signature');

    domain = 'Sibyl margin command v3';
    await assert.rejects(client.marginSigning(), SibylFormatError);
  } finally {
    for (const s of [server, down]) {
      s.closeAllConnections();
      await new Promise<void>((r) => s.close(() => r()));
    }
  }
});
