// `subscribe` against real local HTTP servers speaking the API's SSE format:
// resume across endpoints with Last-Event-ID, de-duplication, catch-up of
// rounds a server did not replay, `lagged`, and verification of each report.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import {
  groupKeys,
  type Json,
  parseJson,
  subscribe,
  type StreamNotice,
  type StreamReport,
  VerifyError,
} from '../src/index.js';

interface Server {
  url: string;
  seen: { path: string; lastEventId: string | undefined }[];
  close(): Promise<void>;
}

async function serve(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<Server> {
  const seen: Server['seen'] = [];
  const server = createServer((req, res) => {
    seen.push({ path: req.url ?? '', lastEventId: req.headers['last-event-id'] as string | undefined });
    handler(req, res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** JSON text with bigints written as plain integers. */
function text(v: Json): string {
  if (typeof v === 'bigint') return v.toString();
  if (Array.isArray(v)) return `[${v.map(text).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    return `{${Object.entries(v)
      .map(([k, x]) => `${JSON.stringify(k)}:${text(x)}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}

function event(round: number | bigint, leaves: Json[] = [leafValue('BTC-USD', 100n + BigInt(round))]): string {
  const data = text({ round: BigInt(round), timestamp_ms: 1_760_000_000_000n + BigInt(round), leaves });
  return `event: report\nid: ${round}\ndata: ${data}\n\n`;
}

function leafValue(feed: string, price: bigint): Json {
  return {
    feed_id: feed,
    price: price.toString(),
    confidence: '5',
    num_observations: 3,
    observed_at_ms: 1_760_000_000_000,
    bid: null,
    ask: null,
    venues: 3,
    status: 'ok',
    flags: [],
    ema: price.toString(),
    ema_confidence: '5',
    volatility: '0',
  };
}

function sse(res: ServerResponse, events: string[], end = true) {
  res.writeHead(200, { 'content-type': 'text/event-stream' });
  res.write(': keep-alive\n\n');
  for (const e of events) res.write(e);
  if (end) res.end();
}

async function collect(
  it: AsyncGenerator<StreamReport>,
  until: (r: StreamReport) => boolean,
): Promise<StreamReport[]> {
  const out: StreamReport[] = [];
  const timer = setTimeout(() => it.return(undefined), 10_000);
  try {
    for await (const r of it) {
      out.push(r);
      if (until(r)) break;
    }
  } finally {
    clearTimeout(timer);
  }
  return out;
}

const rounds = (rs: StreamReport[]) => rs.map((r) => Number(r.round));

test('resumes on the next endpoint with Last-Event-ID, each round once and in order', async () => {
  const a = await serve((_req, res) => sse(res, [event(1), event(2), event(3)]));
  // B replays what follows Last-Event-ID (as a gateway does), overlapping A.
  const b = await serve((req, res) => {
    const after = Number(req.headers['last-event-id'] ?? 0);
    sse(res, [1, 2, 3, 4, 5].filter((r) => r > after - 1).map((r) => event(r)), false);
  });
  try {
    const notices: StreamNotice[] = [];
    const got = await collect(
      subscribe({ endpoints: [a.url, b.url], retryMs: 10, onNotice: (n) => notices.push(n) }),
      (r) => r.round === 5n,
    );
    assert.deepEqual(rounds(got), [1, 2, 3, 4, 5]);
    assert.deepEqual(got.map((r) => r.endpoint), [a.url, a.url, a.url, b.url, b.url]);
    assert.equal(got[4]?.leaves[0]?.price, 105n);
    assert.equal(a.seen[0]?.lastEventId, undefined);
    assert.equal(b.seen[0]?.lastEventId, '3');
    assert.ok(notices.some((n) => n.kind === 'connected' && n.detail === 'resuming after round 3'));
  } finally {
    await a.close();
    await b.close();
  }
});

test('fills rounds a server did not replay from /v1/reports, skipping rounds without a report', async () => {
  const vectors = parseJson(
    readFileSync(new URL('../../../../aggregator/vectors/client_vectors.json', import.meta.url), 'utf8'),
  ) as { [k: string]: Json };
  const single = (vectors.reports as { [k: string]: Json }[]).find((c) => c.name === 'single-feed');
  assert.ok(single);
  const reportOf = (round: number) => {
    const r = structuredClone(single.report) as { header: { round: bigint } };
    r.header.round = BigInt(round);
    return text({ report: r as unknown as Json });
  };
  const a = await serve((_req, res) => sse(res, [event(1), event(2)]));
  const b = await serve((req, res) => {
    if (req.url?.startsWith('/v1/stream')) return sse(res, [event(6), event(7)], false);
    const round = Number(req.url?.split('/').pop());
    if (round === 4) {
      res.writeHead(404, { 'content-type': 'application/json' });
      return res.end('{"error":{"code":"unknown_round","message":"no signed report for round 4"}}');
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(reportOf(round));
  });
  try {
    const got = await collect(subscribe({ endpoints: [a.url, b.url], retryMs: 10 }), (r) => r.round === 7n);
    assert.deepEqual(rounds(got), [1, 2, 3, 5, 6, 7]);
    assert.deepEqual(
      got.map((r) => r.source),
      ['stream', 'stream', 'catch-up', 'catch-up', 'stream', 'stream'],
    );
    assert.equal(got[2]?.leaves[0]?.price, 6512345678901234n);
    assert.deepEqual(
      b.seen.map((s) => s.path),
      ['/v1/stream', '/v1/reports/3', '/v1/reports/4', '/v1/reports/5'],
    );
  } finally {
    await a.close();
    await b.close();
  }
});

test('drops duplicates and reconnects after `lagged`, filtering by feed', async () => {
  let connects = 0;
  const a = await serve((req, res) => {
    connects++;
    if (connects === 1) {
      return sse(res, [
        event(1),
        event(2),
        event(2),
        event(1),
        event(3, [leafValue('ETH-USD', 7n)]), // no BTC-USD leaf
        'event: lagged\ndata: this client read too slowly\n\n',
        event(4), // after lagged: never read
      ]);
    }
    assert.equal(req.headers['last-event-id'], '3');
    sse(res, [event(3), event(4), event(5, [leafValue('BTC-USD', 9n), leafValue('ETH-USD', 8n)])], false);
  });
  try {
    const notices: StreamNotice[] = [];
    const got = await collect(
      subscribe({ endpoints: a.url, feeds: ['BTC-USD'], retryMs: 10, onNotice: (n) => notices.push(n) }),
      (r) => r.round === 5n,
    );
    assert.deepEqual(rounds(got), [1, 2, 4, 5]);
    assert.deepEqual(got[3]?.leaves.map((l) => l.feedId), ['BTC-USD']);
    assert.ok(a.seen[0]?.path.endsWith('?feeds=BTC-USD'));
    assert.ok(notices.some((n) => n.kind === 'lagged'));
  } finally {
    await a.close();
  }
});

test('with verify, every delivered report is checked and a forged one stops the subscription', async () => {
  const vectors = parseJson(
    readFileSync(new URL('../../../../aggregator/vectors/client_vectors.json', import.meta.url), 'utf8'),
  ) as { [k: string]: Json };
  const cases = vectors.reports as { [k: string]: Json }[];
  const k = (vectors.keys as { [k: string]: { [k: string]: string } }).committee as { [k: string]: string };
  const keys = groupKeys({ configDigest: k.config_digest as string, ed25519: k.ed25519, secp256k1Evm: k['secp256k1-evm'] });
  const byRound = new Map<string, string>();
  for (const name of ['single-feed', 'three-feeds-odd-promotion']) {
    const c = cases.find((x) => x.name === name) as { report: { header: { round: bigint } } };
    byRound.set(String(c.report.header.round), text({ report: c.report as unknown as Json }));
  }
  // Round 3: a report with a changed leaf, renumbered: its signatures no longer hold.
  const forged = cases.find((x) => x.name === 'tampered-leaf') as { report: { header: { round: bigint } } };
  const f = structuredClone(forged.report);
  f.header.round = 3n;
  byRound.set('3', text({ report: f as unknown as Json }));
  const a = await serve((req, res) => {
    if (req.url?.startsWith('/v1/stream')) return sse(res, [event(1), event(2), event(3)], false);
    const body = byRound.get(req.url?.split('/').pop() ?? '');
    res.writeHead(body ? 200 : 404, { 'content-type': 'application/json' });
    res.end(body ?? '{"error":{"code":"unknown_round","message":"none"}}');
  });
  try {
    const got: StreamReport[] = [];
    await assert.rejects(
      (async () => {
        for await (const r of subscribe({ endpoints: a.url, keys, verify: true, retryMs: 10 })) got.push(r);
      })(),
      (e: unknown) => e instanceof VerifyError && e.code === 'BadSignature',
    );
    assert.deepEqual(rounds(got), [1, 2]);
    assert.deepEqual(got[1]?.verified?.suites, ['ed25519', 'secp256k1-evm']);
    assert.deepEqual(got[1]?.leaves.map((l) => l.feedId), ['BTC-USD', 'ETH-USD', 'WTI-SPREAD']);
  } finally {
    await a.close();
  }
});
