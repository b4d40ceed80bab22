// Byte helpers and a bounds-checked reader for the kith encodings (docs/crypto.md, Encodings).
import { CryptoError } from './errors';

/** The format version every encoding starts with. */
export const VERSION = 0x02;

export function concat(...parts: Uint8Array[]): Uint8Array {
  let len = 0;
  for (const p of parts) len += p.length;
  const out = new Uint8Array(len);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export function u16(n: number): Uint8Array {
  return new Uint8Array([(n >>> 8) & 0xff, n & 0xff]);
}

export function u32(n: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, n >>> 0, false);
  return out;
}

export function u64(n: number | bigint): Uint8Array {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(n), false);
  return out;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

export function utf8(s: string): Uint8Array {
  return encoder.encode(s);
}

export function fromUtf8(b: Uint8Array): string {
  return decoder.decode(b);
}

/** `str16(U)`: a u16 length then the UTF-8 bytes, 1 to 255 bytes. */
export function str16(userId: string): Uint8Array {
  const b = utf8(userId);
  if (b.length < 1 || b.length > 255) throw new CryptoError('InvalidUserId', `a user id is 1 to 255 bytes, not ${b.length}`);
  return concat(u16(b.length), b);
}

export function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}

/** Lexicographic comparison of two byte strings. */
export function compare(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

export function hex(b: Uint8Array): string {
  let s = '';
  for (const x of b) s += x.toString(16).padStart(2, '0');
  return s;
}

export function unhex(s: string): Uint8Array {
  if (s.length % 2 !== 0 || /[^0-9a-fA-F]/.test(s)) throw new CryptoError('InvalidHex', 'not a hex string');
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return out;
}

export function toBase64(b: Uint8Array): string {
  let s = '';
  for (let i = 0; i < b.length; i += 0x8000) s += String.fromCharCode(...b.subarray(i, i + 0x8000));
  return btoa(s);
}

export function fromBase64(s: string): Uint8Array {
  let bin: string;
  try {
    bin = atob(s);
  } catch {
    throw new CryptoError('InvalidBase64', 'not standard base64');
  }
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** Cursor over untrusted bytes; every read is bounds-checked and fails with a typed error. */
export class Reader {
  private at = 0;
  constructor(
    private readonly buf: Uint8Array,
    readonly what: string,
  ) {}

  header(kind: number): void {
    const version = this.u8();
    if (version !== VERSION)
      throw new CryptoError('UnsupportedVersion', `${this.what}: version ${version}, this client speaks version ${VERSION}`);
    const got = this.u8();
    if (got !== kind) throw new CryptoError('WrongKind', `${this.what}: kind 0x${got.toString(16)}, expected 0x${kind.toString(16)}`);
  }

  take(n: number): Uint8Array {
    if (this.remaining() < n)
      throw new CryptoError('Truncated', `${this.what}: needed ${n} more bytes, ${this.remaining()} available`);
    const out = this.buf.slice(this.at, this.at + n);
    this.at += n;
    return out;
  }

  u8(): number {
    return this.take(1)[0];
  }

  u16(): number {
    const b = this.take(2);
    return (b[0] << 8) | b[1];
  }

  u32(): number {
    return new DataView(this.take(4).buffer).getUint32(0, false);
  }

  u64(): number {
    const v = new DataView(this.take(8).buffer).getBigUint64(0, false);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new CryptoError('InconsistentState', `${this.what}: timestamp out of range`);
    return Number(v);
  }

  flag(what: string): boolean {
    const v = this.u8();
    if (v > 1) throw new CryptoError('InvalidFlag', `${what}: flag byte ${v}`);
    return v === 1;
  }

  optU32(what: string): number | null {
    return this.flag(what) ? this.u32() : null;
  }

  userId(): string {
    const len = this.u16();
    if (len < 1 || len > 255) throw new CryptoError('InvalidUserId', `a user id is 1 to 255 bytes, not ${len}`);
    try {
      return fromUtf8(this.take(len));
    } catch (e) {
      if (e instanceof CryptoError) throw e;
      throw new CryptoError('InvalidUserId', 'a user id is not UTF-8');
    }
  }

  remaining(): number {
    return this.buf.length - this.at;
  }

  rest(): Uint8Array {
    return this.take(this.remaining());
  }

  finish(): void {
    if (this.remaining() !== 0) throw new CryptoError('TrailingBytes', `${this.what}: ${this.remaining()} bytes too many`);
  }
}

export function optU32(v: number | null): Uint8Array {
  return v === null ? new Uint8Array([0]) : concat(new Uint8Array([1]), u32(v));
}
