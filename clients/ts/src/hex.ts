// Hex and byte helpers. The API writes hex without a `0x` prefix, the
// on-chain tools with one; every reader here accepts both.

/** Bytes of a hex string (`0x` optional); throws on odd length or a non-hex digit. */
export function fromHex(hex: string): Uint8Array {
  const s = hex.startsWith('0x') || hex.startsWith('0X') ? hex.slice(2) : hex;
  if (s.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(s)) {
    throw new TypeError(`not a hex string: ${JSON.stringify(hex.slice(0, 80))}`);
  }
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = (nibble(s.charCodeAt(2 * i)) << 4) | nibble(s.charCodeAt(2 * i + 1));
  return out;
}

function nibble(c: number): number {
  return c <= 57 ? c - 48 : (c | 32) - 87; // '0'..'9', 'a'..'f' / 'A'..'F' (checked by the caller)
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

/** Lowercase hex of `bytes`, with a `0x` prefix when `prefix` is true. */
export function toHex(bytes: Uint8Array, prefix = false): string {
  let s = '';
  for (const b of bytes) s += HEX[b] as string;
  return prefix ? `0x${s}` : s;
}

/** The concatenation of `parts`. */
export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Whether two byte strings are equal. */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= (a[i] ?? 0) ^ (b[i] ?? 0);
  return diff === 0;
}

/** Big-endian unsigned integer of `bytes`. */
export function bytesToBigInt(bytes: Uint8Array): bigint {
  return bytes.length === 0 ? 0n : BigInt(`0x${toHex(bytes)}`);
}

/** Little-endian unsigned integer of `bytes`. */
export function bytesToBigIntLE(bytes: Uint8Array): bigint {
  return bytesToBigInt(Uint8Array.from(bytes).reverse());
}

/** `v` as a 32-byte big-endian word (two's complement for negative values). */
export function word(v: bigint): Uint8Array {
  const m = v < 0n ? (1n << 256n) + v : v;
  if (m < 0n || m >= 1n << 256n) throw new RangeError(`${v} does not fit in 256 bits`);
  return fromHex(m.toString(16).padStart(64, '0'));
}
