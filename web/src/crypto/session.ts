// Sessions: X3DH setup then the Double Ratchet (docs/crypto.md, Session setup and Messages).
import { Reader, VERSION, concat, equal, optU32, u32 } from './bytes';
import { CryptoError } from './errors';
import { DeviceCertificate, DeviceIdentity, Kind, OneTimePreKey, SignedPreKey, VerifiedPreKeyBundle } from './keys';
import { MessageInfo, RatchetMessage, encodeHeader, parse, prekeyPrefix } from './message';
import { Rng, ZERO32, checkDhPublic, dh, hkdf, hmac, open, seal, xPublic } from './primitives';
import { ReplayRecord, Setup, sameSetup } from './replay';
import { MAX_SKIPPED_KEYS_PER_CHAIN, NewKey, SkippedKeys } from './skipped';

export const MAX_SKIP = 25_000;

export interface Decrypted {
  plaintext: Uint8Array;
  /** Skipped keys this decryption dropped (evicted or expired): messages that can no longer be read. */
  lost: number;
}

export function x3dh(dhs: Uint8Array[]): Uint8Array {
  return hkdf(ZERO32, concat(new Uint8Array(32).fill(0xff), ...dhs), 'kith-x3dh-v1', 32);
}

export function kdfRk(rk: Uint8Array, dhOut: Uint8Array): [Uint8Array, Uint8Array] {
  const okm = hkdf(rk, dhOut, 'kith-ratchet-root-v1', 64);
  return [okm.slice(0, 32), okm.slice(32)];
}

export function kdfCk(ck: Uint8Array): [Uint8Array, Uint8Array] {
  return [hmac(ck, new Uint8Array([1])), hmac(ck, new Uint8Array([2]))];
}

export function messageKeys(mk: Uint8Array): Uint8Array {
  return hkdf(ZERO32, mk, 'kith-message-keys-v1', 44);
}

interface Ratchet {
  rootKey: Uint8Array;
  ours: Uint8Array;
  oursPublic: Uint8Array;
  theirs: Uint8Array | null;
  sending: Uint8Array | null;
  receiving: Uint8Array | null;
  sent: number;
  received: number;
  previousSent: number;
}

export type Role = 'initiator' | 'responder';

const MAX_U32 = 0xffffffff;

function checkOwnCertificate(identity: DeviceIdentity, certificate: DeviceCertificate): void {
  if (!certificate.device.equals(identity.public))
    throw new CryptoError('CertificateMismatch', 'our certificate vouches for another device identity');
}

/**
 * An end-to-end encrypted session with one device of a peer. Every failing method leaves the
 * session unchanged; persist it after every successful encrypt/decrypt and never go back.
 */
export class Session {
  private constructor(
    readonly role: Role,
    readonly local: DeviceCertificate,
    readonly remote: DeviceCertificate,
    readonly setup: Setup,
    private awaitingReply: boolean,
    private ratchet: Ratchet,
    private skipped: SkippedKeys,
  ) {}

  /** Initiator's half: draws the base key, then the first ratchet key. */
  static initiate(identity: DeviceIdentity, certificate: DeviceCertificate, verified: VerifiedPreKeyBundle, rng: Rng): Session {
    checkOwnCertificate(identity, certificate);
    const { bundle } = verified;
    const spk = bundle.signedPreKey.key;
    const base = rng();
    const dhs = [dh(identity.dhSecret, spk, 'DH1'), dh(base, bundle.identity.dhKey, 'DH2'), dh(base, spk, 'DH3')];
    if (bundle.oneTimePreKey) dhs.push(dh(base, bundle.oneTimePreKey.key, 'DH4'));
    const shared = x3dh(dhs);
    const ours = rng();
    const [rootKey, sending] = kdfRk(shared, dh(ours, spk, 'initial ratchet'));
    return new Session(
      'initiator',
      certificate,
      verified.certificate,
      { baseKey: xPublic(base), signedPreKeyId: bundle.signedPreKey.id, oneTimePreKeyId: bundle.oneTimePreKey?.id ?? null },
      true,
      { rootKey, ours, oursPublic: xPublic(ours), theirs: spk, sending, receiving: null, sent: 0, received: 0, previousSent: 0 },
      new SkippedKeys(),
    );
  }

  /** Responder's half from a prekey message; decrypts it and records the setup in `replays`. */
  static respond(
    identity: DeviceIdentity,
    certificate: DeviceCertificate,
    signedPreKey: SignedPreKey,
    oneTimePreKey: OneTimePreKey | null,
    replays: ReplayRecord,
    message: Uint8Array,
    now: number,
  ): { session: Session; decrypted: Decrypted } {
    checkOwnCertificate(identity, certificate);
    const w = parse(message);
    if (w.kind !== 'prekey') throw new CryptoError('NotAPreKeyMessage', 'not a prekey message');
    const p = w.message;
    replays.check(p.setup);
    if (p.setup.signedPreKeyId !== signedPreKey.id) throw new CryptoError('SignedPreKeyMismatch', 'the message names another signed prekey');
    if (p.setup.oneTimePreKeyId !== (oneTimePreKey?.id ?? null)) throw new CryptoError('OneTimePreKeyMismatch', 'the message names another one-time prekey');
    const spk = signedPreKey.secret;
    const dhs = [dh(spk, p.sender.device.dhKey, 'DH1'), dh(identity.dhSecret, p.setup.baseKey, 'DH2'), dh(spk, p.setup.baseKey, 'DH3')];
    if (oneTimePreKey) dhs.push(dh(oneTimePreKey.secret, p.setup.baseKey, 'DH4'));
    const session = new Session(
      'responder',
      certificate,
      p.sender,
      p.setup,
      false,
      { rootKey: x3dh(dhs), ours: spk, oursPublic: signedPreKey.public.key, theirs: null, sending: null, receiving: null, sent: 0, received: 0, previousSent: 0 },
      new SkippedKeys(),
    );
    const decrypted = session.decryptRatchet(p.inner, now);
    replays.insert(session.setup);
    return { session, decrypted };
  }

  private aad(header: Uint8Array): Uint8Array {
    const [i, r] = this.role === 'initiator' ? [this.local, this.remote] : [this.remote, this.local];
    return concat(i.party(), r.party(), header);
  }

  encrypt(plaintext: Uint8Array, rng: Rng): Uint8Array {
    const next = { ...this.ratchet };
    let sending = next.sending;
    if (sending === null) {
      if (next.theirs === null) throw new CryptoError('Internal', 'sending ratchet without a peer ratchet key');
      const ours = rng();
      const [rootKey, chain] = kdfRk(next.rootKey, dh(ours, next.theirs, 'sending ratchet'));
      next.rootKey = rootKey;
      next.ours = ours;
      next.oursPublic = xPublic(ours);
      next.previousSent = next.sent;
      next.sent = 0;
      sending = chain;
    }
    const counter = next.sent;
    if (counter >= MAX_U32) throw new CryptoError('CounterExhausted', 'the sending chain is exhausted');
    next.sent = counter + 1;
    const [mk, chain] = kdfCk(sending);
    next.sending = chain;
    const header = encodeHeader({ ratchetKey: next.oursPublic, previousCounter: next.previousSent, counter });
    const ct = seal(messageKeys(mk), this.aad(header), plaintext);
    const out = this.awaitingReply ? concat(prekeyPrefix(this.local, this.setup), header, ct) : concat(header, ct);
    this.ratchet = next;
    return out;
  }

  decrypt(bytes: Uint8Array, now: number): Decrypted {
    const w = parse(bytes);
    if (w.kind === 'ratchet') return this.decryptRatchet(w.message, now);
    if (this.role === 'initiator') throw new CryptoError('SessionMismatch', "prekey message sent to the session's initiator");
    if (!w.message.sender.equals(this.remote)) throw new CryptoError('SessionMismatch', 'prekey message from another identity');
    if (!sameSetup(w.message.setup, this.setup)) throw new CryptoError('SessionMismatch', 'prekey message of another session setup');
    return this.decryptRatchet(w.message.inner, now);
  }

  expireSkippedKeys(now: number): number {
    return this.skipped.expire(now);
  }

  private decryptRatchet(m: RatchetMessage, now: number): Decrypted {
    const h = m.header;
    const aad = this.aad(m.headerBytes);
    const index = this.skipped.find(h.ratchetKey, h.counter, now);
    if (index >= 0) {
      const plaintext = open(messageKeys(this.skipped.entries[index].key), aad, m.ciphertext);
      if (plaintext === null) throw new CryptoError('AuthenticationFailed', `message ${h.counter} does not authenticate`);
      this.skipped.remove(index);
      const lost = this.skipped.expire(now);
      this.awaitingReply = false;
      return { plaintext, lost };
    }
    const next = { ...this.ratchet };
    const fresh: NewKey[] = [];
    const dropped = { n: 0 };
    if (next.theirs === null || !equal(next.theirs, h.ratchetKey)) {
      if (next.theirs !== null) skip(next, next.theirs, h.previousCounter, fresh, dropped);
      const [rootKey, chain] = kdfRk(next.rootKey, dh(next.ours, h.ratchetKey, 'receiving ratchet'));
      next.rootKey = rootKey;
      next.receiving = chain;
      next.received = 0;
      next.theirs = h.ratchetKey;
      next.sending = null;
    }
    if (h.counter < next.received) throw new CryptoError('DuplicateMessage', `message ${h.counter} was already received (or its key is gone)`);
    skip(next, h.ratchetKey, h.counter, fresh, dropped);
    if (next.receiving === null) throw new CryptoError('SessionMismatch', 'no receiving chain for this ratchet key');
    const [mk, chain] = kdfCk(next.receiving);
    next.receiving = chain;
    if (h.counter >= MAX_U32) throw new CryptoError('CounterExhausted', 'counter exhausted');
    next.received = h.counter + 1;
    const plaintext = open(messageKeys(mk), aad, m.ciphertext);
    if (plaintext === null) throw new CryptoError('AuthenticationFailed', `message ${h.counter} does not authenticate`);
    this.ratchet = next;
    const skipped = this.skipped.clone();
    const lost = skipped.insert(fresh, dropped.n, now);
    this.skipped = skipped;
    this.awaitingReply = false;
    return { plaintext, lost };
  }

  get awaiting(): boolean {
    return this.awaitingReply;
  }

  get skippedKeyCount(): number {
    return this.skipped.length;
  }

  /** Whether a prekey message belongs to this (responder) session. */
  matchesPrekeyMessage(info: MessageInfo): boolean {
    return info.kind === 'prekey' && this.role === 'responder' && info.certificate.equals(this.remote) && sameSetup(info.setup, this.setup);
  }

  toBytes(): Uint8Array {
    const r = this.ratchet;
    const opt = (v: Uint8Array | null) => (v === null ? new Uint8Array([0]) : concat(new Uint8Array([1]), v));
    return concat(
      new Uint8Array([VERSION, Kind.SESSION, this.role === 'initiator' ? 0 : 1]),
      this.local.body(),
      this.remote.body(),
      this.setup.baseKey,
      u32(this.setup.signedPreKeyId),
      optU32(this.setup.oneTimePreKeyId),
      new Uint8Array([this.awaitingReply ? 1 : 0]),
      r.rootKey,
      r.ours,
      opt(r.theirs),
      opt(r.sending),
      opt(r.receiving),
      u32(r.sent),
      u32(r.received),
      u32(r.previousSent),
      this.skipped.write(),
    );
  }

  static fromBytes(bytes: Uint8Array): Session {
    const r = new Reader(bytes, 'session');
    r.header(Kind.SESSION);
    const roleByte = r.u8();
    if (roleByte > 1) throw new CryptoError('InvalidFlag', `session role ${roleByte}`);
    const role: Role = roleByte === 0 ? 'initiator' : 'responder';
    const local = DeviceCertificate.readBody(r);
    const remote = DeviceCertificate.readBody(r);
    const setup = { baseKey: checkDhPublic(r.take(32), 'base key'), signedPreKeyId: r.u32(), oneTimePreKeyId: r.optU32('one-time prekey flag') };
    const awaiting = r.flag('awaiting-reply flag');
    if (awaiting && role === 'responder') throw new CryptoError('InconsistentState', 'a responder never awaits a reply');
    const rootKey = r.take(32);
    const ours = r.take(32);
    const theirs = r.flag('peer ratchet key flag') ? checkDhPublic(r.take(32), 'peer ratchet key') : null;
    const sending = r.flag('sending chain flag') ? r.take(32) : null;
    const receiving = r.flag('receiving chain flag') ? r.take(32) : null;
    if (theirs === null && (sending !== null || receiving !== null)) throw new CryptoError('InconsistentState', 'chains without a peer ratchet key');
    const sent = r.u32();
    const received = r.u32();
    const previousSent = r.u32();
    const skipped = SkippedKeys.read(r);
    r.finish();
    return new Session(role, local, remote, setup, awaiting, { rootKey, ours, oursPublic: xPublic(ours), theirs, sending, receiving, sent, received, previousSent }, skipped);
  }
}

/** Derives the keys of messages `received..until` of the receiving chain (newest 1,000 kept). */
function skip(next: Ratchet, theirs: Uint8Array, until: number, out: NewKey[], dropped: { n: number }): void {
  let chain = next.receiving;
  if (chain === null || until <= next.received) return;
  const gap = until - next.received;
  if (gap > MAX_SKIP) throw new CryptoError('SkipTooLarge', `a skip of ${gap} messages; at most ${MAX_SKIP}`);
  const run: NewKey[] = [];
  while (next.received < until) {
    const [mk, following] = kdfCk(chain);
    if (run.length === MAX_SKIPPED_KEYS_PER_CHAIN) {
      run.shift();
      dropped.n += 1;
    }
    run.push({ ratchetKey: theirs, counter: next.received, key: mk });
    chain = following;
    next.received += 1;
  }
  out.push(...run);
  next.receiving = chain;
}
