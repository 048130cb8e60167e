// `subscribe`: the report stream (`GET /v1/stream`, Server-Sent Events,
// event id = round) over several endpoints, resumed across reconnects and
// de-duplicated by round, so a consumer sees every round once, in order.
//
//   connect(endpoint i, Last-Event-ID: last delivered round)
//     ├─ report r ≤ last ─────────────► dropped (a replay or another endpoint's copy)
//     ├─ first report after a resume
//     │  with r > last + 1 ─────────────► catch up: GET /v1/reports/{last+1 .. r-1}
//     │                                    (a server that replays from Last-Event-ID
//     │                                     leaves no gap; one that does not is filled)
//     ├─ report ─► [verify: GET /v1/reports/r, verifyReport] ─► yield, last = r
//     └─ `lagged`, end of stream, error ─► next endpoint (all failed: wait retryMs)

import { endpointsOf, type ClientOptions, SibylClient, SibylHttpError } from './client.js';
import { parseJson } from './json.js';
import { int, leafFromJson, obj, type ReportLeaf, SibylFormatError, type SignedReport } from './types.js';
import { verifyReport, type VerifiedReport } from './verify.js';

/** One round's report as the subscriber delivers it. */
export interface StreamReport {
  round: bigint;
  timestampMs: bigint;
  /** The leaves (only the subscribed feeds when `feeds` is set). */
  leaves: ReportLeaf[];
  /** The endpoint it came from. */
  endpoint: string;
  /** `stream` (live or replayed by the server) or `catch-up` (fetched to fill a gap). */
  source: 'stream' | 'catch-up';
  /** With `verify`: the verified signed report the leaves were taken from. */
  verified?: VerifiedReport;
}

/** What happened to the connection, for logs and tests. */
export interface StreamNotice {
  kind: 'connected' | 'disconnected' | 'lagged' | 'gap';
  endpoint: string;
  detail: string;
}

/** Options of `subscribe`. */
export interface SubscribeOptions extends ClientOptions {
  /** Only reports holding these feeds, and only their leaves. */
  feeds?: string[];
  /** Resume after this round, as if it had been delivered. */
  after?: bigint;
  /**
   * Fetch each report (`/v1/reports/{round}`) and verify it with `keys`
   * before delivering it; the stream itself carries no signatures.
   */
  verify?: boolean;
  /** Most rounds fetched one by one to fill a gap the server did not replay (default 600). */
  maxCatchUp?: number;
  /** Wait after every endpoint failed in turn (default 1 s). */
  retryMs?: number;
  /** Stops the subscription. Breaking out of the loop does too. */
  signal?: AbortSignal;
  onNotice?: (n: StreamNotice) => void;
}

interface SseEvent {
  event: string;
  data: string;
  id: string | undefined;
}

/** Server-Sent Events of a response body (the WHATWG event-stream grammar). */
export async function* sseEvents(body: ReadableStream<Uint8Array>): AsyncGenerator<SseEvent> {
  const decoder = new TextDecoder();
  let buf = '';
  let event = '';
  let data: string[] = [];
  let id: string | undefined;
  const reader = body.getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      buf += done ? decoder.decode() : decoder.decode(value, { stream: true });
      let nl: RegExpExecArray | null;
      while ((nl = /\r\n|\r|\n/.exec(buf)) !== null) {
        // A lone \r at the end may be the first half of \r\n: wait for more.
        if (nl[0] === '\r' && nl.index === buf.length - 1 && !done) break;
        const line = buf.slice(0, nl.index);
        buf = buf.slice(nl.index + nl[0].length);
        if (line === '') {
          if (data.length > 0) yield { event: event || 'message', data: data.join('\n'), id };
          event = '';
          data = [];
          continue;
        }
        if (line.startsWith(':')) continue;
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let v = colon < 0 ? '' : line.slice(colon + 1);
        if (v.startsWith(' ')) v = v.slice(1);
        if (field === 'event') event = v;
        else if (field === 'data') data.push(v);
        else if (field === 'id' && !v.includes('\0')) id = v;
      }
      if (done) return;
    }
  } finally {
    reader.releaseLock();
    await body.cancel().catch(() => undefined);
  }
}

function pick(leaves: ReportLeaf[], feeds: Set<string> | undefined): ReportLeaf[] {
  return feeds ? leaves.filter((l) => feeds.has(l.feedId)) : leaves;
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/**
 * Subscribes to signed reports; yields each round at most once, in
 * increasing round order, across reconnects and endpoints.
 *
 * ```ts
 * for await (const r of subscribe({ endpoints: [a, b], keys, verify: true })) {
 *   console.log(r.round, r.leaves[0]?.price);
 * }
 * ```
 */
export async function* subscribe(o: SubscribeOptions): AsyncGenerator<StreamReport> {
  const endpoints = endpointsOf(o);
  const fetchFn = o.fetch ?? globalThis.fetch.bind(globalThis);
  const feeds = o.feeds && o.feeds.length > 0 ? new Set(o.feeds) : undefined;
  const maxCatchUp = BigInt(o.maxCatchUp ?? 600);
  const notice = (kind: StreamNotice['kind'], endpoint: string, detail: string) => o.onNotice?.({ kind, endpoint, detail });
  if (o.verify && !o.keys) throw new RangeError('`verify` needs the committee `keys`');
  let last: bigint | null = o.after ?? null;
  let failuresInARow = 0;
  let turn = 0;
  const clients = new Map(endpoints.map((e) => [e, new SibylClient({ ...o, endpoints: [e] })]));

  const fromReport = (endpoint: string, r: SignedReport, source: StreamReport['source'], verified?: VerifiedReport) => ({
    round: r.header.round,
    timestampMs: r.header.timestampMs,
    leaves: pick(r.leaves, feeds),
    endpoint,
    source,
    ...(verified ? { verified } : {}),
  });

  while (!o.signal?.aborted) {
    const endpoint = endpoints[turn % endpoints.length] as string;
    turn++;
    const client = clients.get(endpoint) as SibylClient;
    const ctl = new AbortController();
    const stop = () => ctl.abort();
    o.signal?.addEventListener('abort', stop, { once: true });
    const resumedAfter = last;
    let first = true;
    try {
      const q = feeds ? `?feeds=${[...feeds].map(encodeURIComponent).join(',')}` : '';
      const headers: Record<string, string> = { accept: 'text/event-stream' };
      if (last !== null) headers['last-event-id'] = last.toString();
      const res = await fetchFn(`${endpoint}/v1/stream${q}`, { headers, signal: ctl.signal });
      if (!res.ok || !res.body) {
        throw new SibylHttpError(endpoint, res.status, 'stream_refused', (await res.text()).slice(0, 300));
      }
      failuresInARow = 0;
      notice('connected', endpoint, last === null ? 'live' : `resuming after round ${last}`);
      for await (const ev of sseEvents(res.body)) {
        if (ev.event === 'lagged') {
          notice('lagged', endpoint, ev.data);
          break;
        }
        if (ev.event !== 'report') continue;
        const data = obj(parseJson(ev.data), 'stream report');
        const round = int(data.round, 'round');
        if (last !== null && round <= last) continue;
        if (first && resumedAfter !== null && round > resumedAfter + 1n) {
          // Rounds the server did not replay: fetch them one by one.
          const from = resumedAfter + 1n;
          if (round - from > maxCatchUp) {
            notice('gap', endpoint, `rounds ${from}..${round - 1n} were not replayed and are too many to fetch`);
          } else {
            for (let r = from; r < round; r++) {
              let rep: SignedReport;
              try {
                rep = await client.report(r);
              } catch (e) {
                if (e instanceof SibylHttpError && e.code === 'unknown_round') continue; // no report that round
                throw e;
              }
              const verified = o.verify ? verifyReport(rep, o.keys as NonNullable<typeof o.keys>) : undefined;
              const out = fromReport(endpoint, rep, 'catch-up', verified);
              last = r;
              if (out.leaves.length > 0) yield out;
            }
          }
        }
        first = false;
        let out: StreamReport;
        if (o.verify) {
          const rep = await client.report(round);
          out = fromReport(endpoint, rep, 'stream', verifyReport(rep, o.keys as NonNullable<typeof o.keys>));
        } else {
          if (!Array.isArray(data.leaves)) throw new SibylFormatError('stream report has no leaves');
          out = {
            round,
            timestampMs: int(data.timestamp_ms, 'timestamp_ms'),
            leaves: pick(
              data.leaves.map((l, i) => leafFromJson(l, `leaves[${i}]`)),
              feeds,
            ),
            endpoint,
            source: 'stream',
          };
        }
        last = round;
        if (out.leaves.length > 0) yield out;
      }
      notice('disconnected', endpoint, 'the stream ended');
    } catch (e) {
      if (o.signal?.aborted) return;
      if (e instanceof Error && e.name === 'VerifyError') throw e; // a forged report: never skip silently
      failuresInARow++;
      notice('disconnected', endpoint, (e as Error).message);
    } finally {
      o.signal?.removeEventListener('abort', stop);
      ctl.abort();
    }
    if (failuresInARow >= endpoints.length) {
      failuresInARow = 0;
      await sleep(o.retryMs ?? 1_000, o.signal);
    }
  }
}
