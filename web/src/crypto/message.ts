// Wire messages: ratchet messages and prekey messages (docs/crypto.md, Encodings).
import { Reader, VERSION, concat, optU32, u32 } from './bytes';
import { CryptoError } from './errors';
import { DeviceCertificate, Kind } from './keys';
import { checkDhPublic } from './primitives';
import { Setup } from './replay';

export const HEADER_LEN = 42;
export const TAG_LEN = 16;

export interface Header {
  ratchetKey: Uint8Array;
  previousCounter: number;
  counter: number;
}

export function encodeHeader(h: Header): Uint8Array {
  return concat(new Uint8Array([VERSION, Kind.MESSAGE]), h.ratchetKey, u32(h.previousCounter), u32(h.counter));
}

export interface RatchetMessage {
  header: Header;
  headerBytes: Uint8Array;
  ciphertext: Uint8Array;
}

export interface PreKeyMessage {
  sender: DeviceCertificate;
  setup: Setup;
  inner: RatchetMessage;
}

export type Wire = { kind: 'ratchet'; message: RatchetMessage } | { kind: 'prekey'; message: PreKeyMessage };

function parseRatchet(bytes: Uint8Array): RatchetMessage {
  const r = new Reader(bytes, 'message');
  const headerBytes = r.take(HEADER_LEN);
  const h = new Reader(headerBytes, 'message header');
  h.header(Kind.MESSAGE);
  const header = { ratchetKey: checkDhPublic(h.take(32), 'ratchet key'), previousCounter: h.u32(), counter: h.u32() };
  if (r.remaining() < TAG_LEN) throw new CryptoError('Truncated', `message: needed ${TAG_LEN} bytes of tag`);
  return { header, headerBytes, ciphertext: r.rest() };
}

/** Splits wire bytes into their parts (checking a prekey message's certificate), decrypting nothing. */
export function parse(bytes: Uint8Array): Wire {
  const r = new Reader(bytes, 'message');
  const version = r.u8();
  if (version !== VERSION) throw new CryptoError('UnsupportedVersion', `message: version ${version}, this client speaks version ${VERSION}`);
  const kind = r.u8();
  if (kind === Kind.MESSAGE) return { kind: 'ratchet', message: parseRatchet(bytes) };
  if (kind === Kind.PREKEY_MESSAGE) {
    const sender = DeviceCertificate.readBody(r);
    const baseKey = checkDhPublic(r.take(32), 'base key');
    const signedPreKeyId = r.u32();
    const oneTimePreKeyId = r.optU32('one-time prekey flag');
    const inner = parseRatchet(r.rest());
    return { kind: 'prekey', message: { sender, setup: { baseKey, signedPreKeyId, oneTimePreKeyId }, inner } };
  }
  throw new CryptoError('WrongKind', `message: kind 0x${kind.toString(16)}`);
}

export function prekeyPrefix(sender: DeviceCertificate, setup: Setup): Uint8Array {
  return concat(new Uint8Array([VERSION, Kind.PREKEY_MESSAGE]), sender.body(), setup.baseKey, u32(setup.signedPreKeyId), optU32(setup.oneTimePreKeyId));
}

/** What a receiver learns without decrypting: for a prekey message, the sender and the keys it needs. */
export type MessageInfo =
  | { kind: 'prekey'; certificate: DeviceCertificate; setup: Setup; ratchetKey: Uint8Array; counter: number }
  | { kind: 'ratchet'; ratchetKey: Uint8Array; previousCounter: number; counter: number };

export function inspect(bytes: Uint8Array): MessageInfo {
  const w = parse(bytes);
  if (w.kind === 'ratchet') return { kind: 'ratchet', ...w.message.header };
  const p = w.message;
  return { kind: 'prekey', certificate: p.sender, setup: p.setup, ratchetKey: p.inner.header.ratchetKey, counter: p.inner.header.counter };
}
