// Owner-signed margin commands (docs/MARGIN.md, "Account keys"): an account
// created with an `owner` (an Ed25519 public key) takes the commands that
// move its funds or positions only when that key signed them.
//
//   signed bytes = "Sibyl margin command v2"
//                ‖ committee key length:u8 ‖ committee key
//                ‖ account:u64 BE ‖ nonce:u64 BE ‖ command (UTF-8, as sent)
//
// The committee key is the group key the committee signs its reports with
// (`GET /v1/margin/signing`), so an envelope is good on one deployment's
// book only; `command` is the command's JSON text exactly as sent (the
// engine parses the signed bytes themselves: no canonical JSON). The nonce
// must be above the account's last one. The envelope,
// `{"account", "nonce", "command", "signature"}`, is the body of
// `POST /v1/margin/signed` (`SibylClient.submitSigned`).

import { ed25519 } from '@noble/curves/ed25519.js';
import { concat, fromHex, toHex } from './hex.js';
import type { Json } from './json.js';

const utf8 = new TextEncoder();

/** The domain of the signed bytes (`SIGNED_COMMAND_DOMAIN` in daemon/margin/src/signed.rs). */
export const SIGNED_COMMAND_DOMAIN_TEXT = 'Sibyl margin command v2';
/** `SIGNED_COMMAND_DOMAIN_TEXT` as bytes. */
export const SIGNED_COMMAND_DOMAIN = utf8.encode(SIGNED_COMMAND_DOMAIN_TEXT);
/** Longest committee key the signed bytes carry (a one-byte length). */
export const MAX_COMMITTEE_KEY_LEN = 64;

const U64_MAX = (1n << 64n) - 1n;

/** A command with its account owner's signature: the body of `POST /v1/margin/signed`. */
export interface SignedCommand {
  /** The account the command acts on (also named inside `command`). */
  account: bigint;
  /** Above the account's last signed nonce. */
  nonce: bigint;
  /** The command's JSON text, exactly the bytes signed. */
  command: string;
  /** The 64-byte Ed25519 signature of `signedCommandBytes(...)`. */
  signature: Uint8Array;
}

/** Bytes given as such or as hex (`0x` optional). */
export type BytesLike = Uint8Array | string;

function bytesOf(v: BytesLike, what: string): Uint8Array {
  if (typeof v !== 'string') return v;
  try {
    return fromHex(v.trim());
  } catch {
    throw new TypeError(`${what} is not hex`);
  }
}

function u64(v: bigint | number, what: string): bigint {
  if (typeof v === 'number' && !Number.isSafeInteger(v)) {
    throw new RangeError(`${what} = ${v} is not an exact integer (pass a bigint above 2^53)`);
  }
  const n = BigInt(v);
  if (n < 0n || n > U64_MAX) throw new RangeError(`${what} = ${n} is outside the u64 range`);
  return n;
}

function be64(n: bigint): Uint8Array {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, n, false);
  return out;
}

function committeeBytes(key: BytesLike): Uint8Array {
  const k = bytesOf(key, 'committee key');
  if (k.length === 0 || k.length > MAX_COMMITTEE_KEY_LEN) {
    throw new RangeError(
      `committee key of ${k.length} bytes; a group key is 1 to ${MAX_COMMITTEE_KEY_LEN} (32 for Ed25519, 33 for secp256k1)`,
    );
  }
  return k;
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * The JSON text of a command value, compact, with `bigint`s written as exact
 * integers (`JSON.stringify` refuses them): e.g.
 * `commandText({ withdraw: { account: 40n, asset: 'USD', amount: 250_000_000n } })`.
 * Any text the engine parses as a command will do; this is one.
 */
export function commandText(v: Json): string {
  if (v === null || typeof v === 'boolean' || typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'bigint') return v.toString();
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) throw new RangeError(`${v} is not a JSON number`);
    if (Number.isInteger(v) && !Number.isSafeInteger(v)) {
      throw new RangeError(`${v} is beyond 2^53 and may have lost digits: pass it as a bigint`);
    }
    return JSON.stringify(v);
  }
  if (Array.isArray(v)) return `[${v.map(commandText).join(',')}]`;
  return `{${Object.entries(v)
    .map(([k, x]) => `${JSON.stringify(k)}:${commandText(x)}`)
    .join(',')}}`;
}

function textOf(command: string | Json): string {
  const text = typeof command === 'string' ? command : commandText(command);
  if (LONE_SURROGATE.test(text)) throw new TypeError('the command text has a lone surrogate (not valid UTF-8)');
  return text;
}

/**
 * The bytes an account owner signs: the domain ‖ committee key length (1
 * byte) ‖ committee key ‖ account (u64 BE) ‖ nonce (u64 BE) ‖ the command's
 * JSON text as UTF-8 (exactly the text sent in the envelope).
 */
export function signedCommandBytes(
  committeeKey: BytesLike,
  account: bigint | number,
  nonce: bigint | number,
  command: string,
): Uint8Array {
  const key = committeeBytes(committeeKey);
  return concat(
    SIGNED_COMMAND_DOMAIN,
    Uint8Array.of(key.length),
    key,
    be64(u64(account, 'account')),
    be64(u64(nonce, 'nonce')),
    utf8.encode(textOf(command)),
  );
}

function secretBytes(secretKey: BytesLike): Uint8Array {
  const s = bytesOf(secretKey, 'secret key');
  if (s.length !== 32) throw new RangeError(`secret key of ${s.length} bytes, expected 32 (an Ed25519 seed)`);
  return s;
}

/**
 * Signs `command` (JSON text, or a value `commandText` writes) for `account`
 * with the owner's 32-byte Ed25519 secret key, for the book of the committee
 * whose group key is `committeeKey` (`(await client.marginSigning()).committeeKey`).
 * Ed25519 is deterministic: the same inputs give the same signature.
 */
export function signCommand(
  secretKey: BytesLike,
  committeeKey: BytesLike,
  account: bigint | number,
  nonce: bigint | number,
  command: string | Json,
): SignedCommand {
  const text = textOf(command);
  const acct = u64(account, 'account');
  const n = u64(nonce, 'nonce');
  const signature = ed25519.sign(signedCommandBytes(committeeKey, acct, n, text), secretBytes(secretKey));
  return { account: acct, nonce: n, command: text, signature };
}

/** The envelope's JSON text, as `POST /v1/margin/signed` takes it (and as the Rust `SignedCommand` writes it). */
export function envelopeJson(s: SignedCommand): string {
  if (s.signature.length !== 64) throw new RangeError(`signature of ${s.signature.length} bytes, expected 64`);
  return `{"account":${u64(s.account, 'account')},"nonce":${u64(s.nonce, 'nonce')},"command":${JSON.stringify(
    textOf(s.command),
  )},"signature":"${toHex(s.signature)}"}`;
}

/** The owner key (Ed25519 public key, 32 bytes) of a 32-byte secret key: the account's `owner`. */
export function ownerPublicKey(secretKey: BytesLike): Uint8Array {
  return ed25519.getPublicKey(secretBytes(secretKey));
}

/** A fresh owner key pair from the platform's CSPRNG (like `sibyl margin keygen`). */
export function generateOwnerKey(): { secretKey: Uint8Array; publicKey: Uint8Array } {
  const secretKey = ed25519.utils.randomSecretKey();
  return { secretKey, publicKey: ed25519.getPublicKey(secretKey) };
}

/**
 * Whether `s` verifies under `owner` for `committeeKey`'s book (RFC 8032
 * encodings, no ZIP-215 leniency). A local check before sending; the
 * engine's `verify_strict` decides (it also refuses small-order owner keys,
 * which an account cannot be created with).
 */
export function verifySignedCommand(s: SignedCommand, owner: BytesLike, committeeKey: BytesLike): boolean {
  try {
    const msg = signedCommandBytes(committeeKey, s.account, s.nonce, s.command);
    return ed25519.verify(s.signature, msg, bytesOf(owner, 'owner key'), { zip215: false });
  } catch {
    return false;
  }
}
