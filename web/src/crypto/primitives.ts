// The primitives of docs/crypto.md (Conventions), on the audited @noble libraries.
import { ed25519, x25519 } from '@noble/curves/ed25519.js';
import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { hkdf as nobleHkdf } from '@noble/hashes/hkdf.js';
import { hmac as nobleHmac } from '@noble/hashes/hmac.js';
import { sha256, sha512 } from '@noble/hashes/sha2.js';
import { concat, equal } from './bytes';
import { CryptoError } from './errors';

/** A source of 32-byte draws; every draw the protocol makes is exactly 32 bytes. */
export type Rng = () => Uint8Array;

export const systemRng: Rng = () => crypto.getRandomValues(new Uint8Array(32));

export const ZERO32 = new Uint8Array(32);

export function hkdf(salt: Uint8Array, ikm: Uint8Array, info: string, length: number): Uint8Array {
  return nobleHkdf(sha256, ikm, salt, new TextEncoder().encode(info), length);
}

export function hmac(key: Uint8Array, data: Uint8Array): Uint8Array {
  return nobleHmac(sha256, key, data);
}

export { sha256, sha512 };

/** X25519 public key of a secret (clamped as RFC 7748 says). */
export function xPublic(secret: Uint8Array): Uint8Array {
  return x25519.getPublicKey(secret);
}

/** Accepts only canonical X25519 public keys: little-endian u < 2^255 - 19. */
export function checkDhPublic(key: Uint8Array, what: string): Uint8Array {
  if (key.length !== 32) throw new CryptoError('Truncated', `${what}: 32 bytes expected`);
  const topBit = (key[31] & 0x80) !== 0;
  let atLeastP = key[31] === 0x7f && key[0] >= 0xed;
  for (let i = 1; i < 31 && atLeastP; i++) if (key[i] !== 0xff) atLeastP = false;
  if (topBit || atLeastP) throw new CryptoError('NonCanonicalKey', `${what}: not a canonical X25519 key`);
  return key;
}

/** The raw X25519 function; `null` for an all-zero (non-contributory) result. */
export function x25519Raw(secret: Uint8Array, pub: Uint8Array): Uint8Array | null {
  let out: Uint8Array;
  try {
    out = x25519.getSharedSecret(secret, pub);
  } catch {
    // @noble/curves refuses low-order inputs instead of returning zeros.
    return null;
  }
  return equal(out, ZERO32) ? null : out;
}

/** DH(a, B), failing on a small-order B (docs/crypto.md: NonContributoryKeyAgreement). */
export function dh(secret: Uint8Array, pub: Uint8Array, what: string): Uint8Array {
  const out = x25519Raw(secret, pub);
  if (out === null) throw new CryptoError('NonContributoryKeyAgreement', `${what}: the peer's key has small order`);
  return out;
}

const Point = ed25519.Point;
const L = Point.Fn.ORDER;

export function edPublic(seed: Uint8Array): Uint8Array {
  return ed25519.getPublicKey(seed);
}

export function sign(seed: Uint8Array, message: Uint8Array): Uint8Array {
  return ed25519.sign(message, seed);
}

function decodePoint(bytes: Uint8Array) {
  try {
    const p = Point.fromBytes(bytes, false);
    if (!equal(p.toBytes(), bytes)) return null;
    return p;
  } catch {
    return null;
  }
}

/** Ed25519 public keys that decompress, are canonical, and are not of small order. */
export function checkSigningKey(key: Uint8Array, what: string): Uint8Array {
  const p = key.length === 32 ? decodePoint(key) : null;
  if (p === null || p.isSmallOrder()) throw new CryptoError('InvalidSigningKey', `${what}: not a valid Ed25519 key`);
  return key;
}

function leToBigint(b: Uint8Array): bigint {
  let v = 0n;
  for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]);
  return v;
}

/**
 * Strict Ed25519 verification (as ed25519-dalek's `verify_strict`): canonical S, canonical
 * and not-small-order A and R, and [S]B - [k]A equal to R byte for byte.
 */
export function verifyStrict(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  if (publicKey.length !== 32 || signature.length !== 64) return false;
  const A = decodePoint(publicKey);
  if (A === null || A.isSmallOrder()) return false;
  const rBytes = signature.subarray(0, 32);
  const R = decodePoint(rBytes);
  if (R === null || R.isSmallOrder()) return false;
  const s = leToBigint(signature.subarray(32));
  if (s >= L) return false;
  const k = leToBigint(sha512(concat(rBytes, publicKey, message))) % L;
  const sB = s === 0n ? Point.ZERO : Point.BASE.multiply(s);
  const kA = k === 0n ? Point.ZERO : A.multiplyUnsafe(k);
  const expected = sB.subtract(kA);
  return equal(expected.toBytes(), rBytes);
}

/** ChaCha20-Poly1305 under the key (0..32) and nonce (32..44) of a 44-byte HKDF output. */
export function seal(keyNonce: Uint8Array, aad: Uint8Array, plaintext: Uint8Array): Uint8Array {
  return chacha20poly1305(keyNonce.subarray(0, 32), keyNonce.subarray(32, 44), aad).encrypt(plaintext);
}

/** Opens what `seal` made; `null` when the tag does not authenticate. */
export function open(keyNonce: Uint8Array, aad: Uint8Array, sealed: Uint8Array): Uint8Array | null {
  try {
    return chacha20poly1305(keyNonce.subarray(0, 32), keyNonce.subarray(32, 44), aad).decrypt(sealed);
  } catch {
    return null;
  }
}

/** ChaCha20-Poly1305 with an explicit key and nonce (the Wycheproof vectors). */
export function aead(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array) {
  return chacha20poly1305(key, nonce, aad);
}
