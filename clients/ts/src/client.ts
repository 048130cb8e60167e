// HTTP over one or more API endpoints (members or gateways). A request
// goes to the first endpoint and, on a network error or a 5xx, to the next;
// a 4xx is the answer (the request itself is wrong) and is thrown at once.

import { type Json, parseJson } from './json.js';
import { fromHex } from './hex.js';
import {
  int,
  leafFromJson,
  obj,
  proofFromJson,
  reportFromJson,
  type MerkleProof,
  type ReportLeaf,
  SibylFormatError,
  type SignedReport,
} from './types.js';
import { type GroupKeys, verifyLeaf, verifyReport, type VerifiedReport } from './verify.js';
import { evmSignature, pullPayload, submitFeedsCalldata } from './pull.js';
import { envelopeJson, MAX_COMMITTEE_KEY_LEN, SIGNED_COMMAND_DOMAIN_TEXT, type SignedCommand } from './margin.js';

/** An error answer of the API (`{"error": {"code", "message"}}`) or a failed request. */
export class SibylHttpError extends Error {
  constructor(
    readonly endpoint: string,
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(`${endpoint}: ${status ? `HTTP ${status} ${code}: ` : ''}${message}`);
    this.name = 'SibylHttpError';
  }
}

/** What `SibylClient` and `subscribe` take. */
export interface ClientOptions {
  /** API base URLs, e.g. `http://127.0.0.1:8080`; tried in order. */
  endpoints: string | string[];
  /** The fetch to use (default: the global one). */
  fetch?: typeof fetch;
  /** Per-request timeout (default 10 s). */
  timeoutMs?: number;
  /** The committee's keys, for the `verified*` reads. */
  keys?: GroupKeys;
}

/** A feed's value in one signed report, with what the leaf says about it. */
export interface FeedValue extends ReportLeaf {
  decimals: number | null;
  round: bigint;
  /** The report's timestamp. */
  timestampMs: bigint;
}

/** `GET /v1/feeds/{id}/latest`: the value with everything needed to verify it. */
export interface Latest {
  value: FeedValue;
  report: SignedReport;
  leafIndex: number;
  leaf: ReportLeaf;
  proof: MerkleProof;
  /** The digest the node says the committee signed (recomputed when verifying). */
  digest: Uint8Array;
}

/** A page of raw history. */
export interface HistoryPage {
  feedId: string;
  decimals: number | null;
  points: FeedValue[];
  /** Pass as `cursor` for the next page; `null` at the end. */
  nextCursor: string | null;
}

/** One candle; `open`… `close` in the feed's fixed point. */
export interface Candle {
  startMs: bigint;
  open: bigint;
  high: bigint;
  low: bigint;
  close: bigint;
  count: number;
}

/** A page of candles. */
export interface CandlePage {
  feedId: string;
  decimals: number | null;
  intervalMs: bigint;
  candles: Candle[];
  /** Pass as `from` for the next page; `null` at the end. */
  nextFrom: bigint | null;
}

/** `GET /v1/margin/signing`: what an account owner signs besides its command. */
export interface MarginSigning {
  /** The signed bytes' first bytes, as text (`SIGNED_COMMAND_DOMAIN_TEXT`). */
  domain: string;
  /** The committee's group key the signed bytes name (32 bytes Ed25519, 33 secp256k1). */
  committeeKey: Uint8Array;
  /** The layout of the signed bytes in words. */
  signedBytes: string;
}

/** The answer to a submitted signed command (200, or 201 for a self-registration). */
export interface MarginCommandResult {
  /** The endpoint that answered. */
  endpoint: string;
  status: number;
  account: bigint | null;
  /** The engine's events for the command, as the API renders them (integers exact). */
  events: Json[];
  /** The account's cross-margin health after it, as the API renders it, or null. */
  health: Json | null;
}

/** The endpoints of `o`, without trailing slashes. */
export function endpointsOf(o: ClientOptions): string[] {
  const list = (Array.isArray(o.endpoints) ? o.endpoints : [o.endpoints]).map((e) => e.replace(/\/+$/, ''));
  if (list.length === 0) throw new RangeError('give at least one endpoint');
  return list;
}

function feedValue(v: Json | undefined, what: string): FeedValue {
  const o = obj(v, what);
  return {
    ...leafFromJson(o, what),
    decimals: typeof o.decimals === 'number' ? o.decimals : null,
    round: int(o.round, `${what}.round`),
    timestampMs: int(o.timestamp_ms, `${what}.timestamp_ms`),
  };
}

function list(v: Json | undefined, what: string): Json[] {
  if (!Array.isArray(v)) throw new SibylFormatError(`${what} is not a list`);
  return v;
}

/** Reads feeds, history and signed reports from a Sibyl API. */
export class SibylClient {
  readonly endpoints: string[];
  private readonly fetchFn: typeof fetch;
  private readonly timeoutMs: number;
  private readonly keys: GroupKeys | undefined;

  constructor(options: ClientOptions) {
    this.endpoints = endpointsOf(options);
    this.fetchFn = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.timeoutMs = options.timeoutMs ?? 10_000;
    this.keys = options.keys;
  }

  /** GET `path` from the first endpoint that answers; the parsed JSON body. */
  async get(path: string): Promise<Json> {
    let last: unknown;
    for (const ep of this.endpoints) {
      try {
        return await getJson(this.fetchFn, ep, path, this.timeoutMs);
      } catch (e) {
        if (e instanceof SibylHttpError && e.status >= 400 && e.status < 500) throw e;
        last = e;
      }
    }
    throw last;
  }

  /** `GET /v1/feeds`: every feed with its latest value (`round: null` before the first). */
  async feeds(): Promise<(FeedValue | { feedId: string; decimals: number | null; round: null })[]> {
    const body = obj(await this.get('/v1/feeds'), 'feeds response');
    return list(body.feeds, 'feeds').map((f, i) => {
      const o = obj(f, `feeds[${i}]`);
      if (o.round === null) {
        return { feedId: String(o.feed_id), decimals: typeof o.decimals === 'number' ? o.decimals : null, round: null };
      }
      return feedValue(o, `feeds[${i}]`);
    });
  }

  /** `GET /v1/feeds/{id}/latest`, not yet verified (see `verifiedLatest`). */
  async latest(feedId: string): Promise<Latest> {
    const o = obj(await this.get(`/v1/feeds/${encodeURIComponent(feedId)}/latest`), 'latest');
    const report = reportFromJson(o.report);
    const leafIndex = Number(int(o.leaf_index, 'leaf_index'));
    const leaf = report.leaves[leafIndex];
    if (leaf === undefined || leaf.feedId !== feedId) {
      throw new SibylFormatError(`leaf ${leafIndex} of the report is not feed ${feedId}`);
    }
    if (typeof o.digest !== 'string') throw new SibylFormatError('digest is not a hex string');
    return { value: feedValue(o, 'latest'), report, leafIndex, leaf, proof: proofFromJson(o.proof), digest: fromHex(o.digest) };
  }

  /**
   * The latest value of `feedId`, verified locally: its leaf is under the
   * signed header by its Merkle proof and the header carries the committee's
   * signatures. Returns the signed leaf (not the node's rendering of it).
   */
  async verifiedLatest(feedId: string, keys = this.keys): Promise<Latest & { verifiedDigest: Uint8Array }> {
    const l = await this.latest(feedId);
    const verifiedDigest = verifyLeaf(l.report.header, l.leaf, l.proof, l.report.signatures, this.need(keys));
    return { ...l, verifiedDigest };
  }

  /** `GET /v1/reports/{round}` (`latest` for the newest), not yet verified. */
  async report(round: bigint | number | 'latest'): Promise<SignedReport> {
    const o = obj(await this.get(`/v1/reports/${round}`), 'report response');
    return reportFromJson(o.report);
  }

  /** A signed report by round, verified locally. */
  async verifiedReport(round: bigint | number | 'latest', keys = this.keys): Promise<VerifiedReport> {
    return verifyReport(await this.report(round), this.need(keys));
  }

  /** Raw points in `[from, to)` (ms since the epoch), paged by `nextCursor`. */
  async history(
    feedId: string,
    q: { from?: bigint | number; to?: bigint | number; limit?: number; cursor?: string } = {},
  ): Promise<HistoryPage> {
    const o = obj(await this.get(`/v1/feeds/${encodeURIComponent(feedId)}/history${query(q)}`), 'history');
    return {
      feedId: String(o.feed_id),
      decimals: typeof o.decimals === 'number' ? o.decimals : null,
      points: list(o.points, 'points').map((p, i) => feedValue(p, `points[${i}]`)),
      nextCursor: typeof o.next_cursor === 'string' ? o.next_cursor : null,
    };
  }

  /** Candles of `interval` (`1m`, `1h`, …) in `[from, to)`, paged by `nextFrom`. */
  async candles(
    feedId: string,
    q: { interval: string; from?: bigint | number; to?: bigint | number; limit?: number },
  ): Promise<CandlePage> {
    const o = obj(await this.get(`/v1/feeds/${encodeURIComponent(feedId)}/history${query(q)}`), 'candles');
    return {
      feedId: String(o.feed_id),
      decimals: typeof o.decimals === 'number' ? o.decimals : null,
      intervalMs: int(o.interval_ms, 'interval_ms'),
      candles: list(o.candles, 'candles').map((c, i) => {
        const x = obj(c, `candles[${i}]`);
        return {
          startMs: int(x.start_ms, 'start_ms'),
          open: int(x.open, 'open'),
          high: int(x.high, 'high'),
          low: int(x.low, 'low'),
          close: int(x.close, 'close'),
          count: Number(int(x.count, 'count')),
        };
      }),
      nextFrom: o.next_from === null || o.next_from === undefined ? null : int(o.next_from, 'next_from'),
    };
  }

  /**
   * `SibylFeed.submitFeeds` calldata and the packed `payload` for
   * `updateFeeds` / SibylPull, for the latest value of each feed, built
   * locally from `/latest` after verifying it (feeds in one report share one
   * call). Needs the committee's secp256k1-evm key (in `keys` or the client's).
   */
  async pullCalldata(
    feedIds: string[],
    keys = this.keys,
  ): Promise<{ round: bigint; feeds: string[]; calldata: string; payload: string }[]> {
    const k = this.need(keys);
    if (!k.secp256k1Evm) throw new RangeError('pull calldata needs the secp256k1-evm group key');
    const byRound = new Map<bigint, Latest[]>();
    for (const id of feedIds) {
      const l = await this.verifiedLatest(id, k);
      const r = l.report.header.round;
      byRound.set(r, [...(byRound.get(r) ?? []), l]);
    }
    return [...byRound.entries()]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([round, ls]) => {
        const first = ls[0] as Latest;
        const sig = first.report.signatures['secp256k1-evm'] as Uint8Array;
        ls.sort((a, b) => a.leafIndex - b.leafIndex);
        const evm = evmSignature(sig, k.secp256k1Evm as Uint8Array);
        const proven = ls.map((l) => ({ leaf: l.leaf, proof: l.proof }));
        return {
          round,
          feeds: ls.map((l) => l.leaf.feedId),
          calldata: submitFeedsCalldata(first.report.header, evm, proven),
          payload: pullPayload(first.report.header, evm, proven),
        };
      });
  }

  /**
   * `GET /v1/margin/signing`: the domain and the committee key the bytes an
   * account owner signs name (pass `committeeKey` to `signCommand`). Throws
   * SibylHttpError 503 `no_committee_key` if the engine takes no signed
   * command, and SibylFormatError if the node signs another domain than this
   * SDK (a version mismatch: its signatures would never verify).
   */
  async marginSigning(): Promise<MarginSigning> {
    const o = obj(await this.get('/v1/margin/signing'), 'margin signing');
    if (o.domain !== SIGNED_COMMAND_DOMAIN_TEXT) {
      throw new SibylFormatError(
        `the node's signed-command domain is ${JSON.stringify(o.domain)}, this SDK signs ${JSON.stringify(SIGNED_COMMAND_DOMAIN_TEXT)}`,
      );
    }
    if (typeof o.committee_key !== 'string') throw new SibylFormatError('committee_key is not a hex string');
    let committeeKey: Uint8Array;
    try {
      committeeKey = fromHex(o.committee_key);
    } catch {
      throw new SibylFormatError('committee_key is not hex');
    }
    if (committeeKey.length === 0 || committeeKey.length > MAX_COMMITTEE_KEY_LEN) {
      throw new SibylFormatError(`committee_key has ${committeeKey.length} bytes`);
    }
    return { domain: o.domain, committeeKey, signedBytes: typeof o.signed_bytes === 'string' ? o.signed_bytes : '' };
  }

  /**
   * `POST /v1/margin/signed`: submits an owner-signed command (no admin
   * token: the signature authorizes it) and waits for the committee to order
   * it (up to 30 s on the node; default timeout here 35 s). Refusals are
   * SibylHttpError with the API's code: 400 `bad_envelope` / `bad_command` /
   * `account_mismatch`, 401 `bad_signature` (also an envelope signed for
   * another committee), 403 `no_owner` / `not_signable`, 404, 409
   * `stale_nonce` (the message gives the current nonce), 422 (insufficient
   * margin), 503 `no_committee_key` / `busy`, 504 `not_ordered`. Like the
   * reads, it goes to the next endpoint on a network error or a 5xx; the
   * nonce makes that safe (an envelope applies at most once), but a 409
   * `stale_nonce` after such a retry can mean the first attempt applied:
   * read the account's nonce (`GET /v1/margin/accounts/{id}`).
   */
  async submitSigned(envelope: SignedCommand, opts: { timeoutMs?: number } = {}): Promise<MarginCommandResult> {
    const body = envelopeJson(envelope);
    const timeoutMs = opts.timeoutMs ?? Math.max(this.timeoutMs, 35_000);
    let last: unknown;
    for (const ep of this.endpoints) {
      try {
        const r = await requestJson(this.fetchFn, ep, 'POST', '/v1/margin/signed', timeoutMs, body);
        const o = obj(r.body, 'signed command response');
        return {
          endpoint: ep,
          status: r.status,
          account: o.account === null || o.account === undefined ? null : int(o.account, 'account'),
          events: o.events === undefined ? [] : list(o.events, 'events'),
          health: o.health ?? null,
        };
      } catch (e) {
        if (e instanceof SibylHttpError && e.status >= 400 && e.status < 500) throw e;
        last = e;
      }
    }
    throw last;
  }

  private need(keys: GroupKeys | undefined): GroupKeys {
    if (!keys) throw new RangeError('verifying needs the committee keys: pass `keys` (see groupKeys())');
    return keys;
  }
}

function query(q: Record<string, string | number | bigint | undefined>): string {
  const parts = Object.entries(q)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`);
  return parts.length ? `?${parts.join('&')}` : '';
}

/** GET `endpoint + path` and parse the JSON body exactly; API errors become SibylHttpError. */
export async function getJson(fetchFn: typeof fetch, endpoint: string, path: string, timeoutMs: number): Promise<Json> {
  return (await requestJson(fetchFn, endpoint, 'GET', path, timeoutMs)).body;
}

/**
 * `method` `endpoint + path` (with a JSON `body` text, if any) and parse the
 * answer exactly: its status and body; API errors become SibylHttpError.
 */
export async function requestJson(
  fetchFn: typeof fetch,
  endpoint: string,
  method: 'GET' | 'POST',
  path: string,
  timeoutMs: number,
  body?: string,
): Promise<{ status: number; body: Json }> {
  let res: Response;
  let text: string;
  const headers: Record<string, string> = { accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  try {
    res = await fetchFn(endpoint + path, { method, body, signal: AbortSignal.timeout(timeoutMs), headers });
    text = await res.text();
  } catch (e) {
    throw new SibylHttpError(endpoint, 0, 'unreachable', `${method} ${path} failed: ${(e as Error).message}`);
  }
  let parsed: Json;
  try {
    parsed = parseJson(text);
  } catch {
    throw new SibylHttpError(endpoint, res.status, 'not_json', `${method} ${path} did not answer JSON: ${text.slice(0, 200)}`);
  }
  if (!res.ok) {
    const err = parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed) ? parsed.error : undefined;
    const e = err !== null && typeof err === 'object' && !Array.isArray(err) ? err : {};
    throw new SibylHttpError(
      endpoint,
      res.status,
      typeof e.code === 'string' ? e.code : 'http_error',
      typeof e.message === 'string' ? e.message : `${method} ${path}`,
    );
  }
  return { status: res.status, body: parsed };
}
