// The protocol client: accounts, keys, devices, sessions, envelopes, sending and receiving,
// mirroring kith-chat (client/src/messenger) and docs/crypto.md's client rules.
import {
  DeviceCertificate,
  DeviceIdentity,
  DeviceRemoval,
  OneTimePreKey,
  PreKeyBundle,
  ReplayRecord,
  Session,
  SignedPreKey,
  UserIdentity,
  UserIdentityPublic,
  fromBase64,
  fromUtf8,
  hex,
  inspect,
  generateLinkSecret,
  linkCodeText,
  newLinkRequest,
  newLinkResponse,
  openLinkRequest,
  openLinkResponse,
  parseLinkCode,
  safetyNumber,
  systemRng,
  toBase64,
  unhex,
  utf8,
} from '../crypto';
import { Api, ApiError, NetworkError } from './api';
import { Db } from './db';
import { Contact, ConversationMeta, Entry, Outgoing, State, Status } from './state';
import { KeyFile, Vault } from './vault';

const MAX_SESSIONS = 5;
const PREKEY_LOW = 20;
const PREKEY_TARGET = 100;
const DEVICE_LIST_MAX_AGE_MS = 10 * 60 * 1000;
const PROCESSED_KEPT = 10_000;
const rng = systemRng;

export type Event =
  | { kind: 'changed' }
  | { kind: 'warning'; text: string }
  | { kind: 'identityChanged'; user: string };

function randomDeviceId(): number {
  return Math.max(1, crypto.getRandomValues(new Uint32Array(1))[0]);
}

function randomId(): string {
  return hex(crypto.getRandomValues(new Uint8Array(16)));
}

interface ServerMessage {
  messageId: string;
  senderId: string;
  receiverId: string;
  message: string;
  timestamp: string;
}

interface EnvelopeJson {
  v?: unknown;
  kind?: unknown;
  from?: { deviceId?: unknown };
  to?: { userId?: unknown; deviceId?: unknown; body?: unknown }[];
  control?: unknown;
  body?: unknown;
}

export class Messenger {
  readonly api: Api;
  private listeners = new Set<(e: Event) => void>();
  private histories = new Map<string, Entry[]>();
  private linkWaiter: ((bytes: Uint8Array) => boolean) | null = null;
  private chain: Promise<unknown> = Promise.resolve();

  private constructor(
    private readonly db: Db,
    private readonly vault: Vault,
    public state: State,
  ) {
    this.api = new Api(state.token);
  }

  get userId(): string {
    return this.state.userId;
  }

  on(f: (e: Event) => void): () => void {
    this.listeners.add(f);
    return () => this.listeners.delete(f);
  }

  private emit(e: Event): void {
    for (const f of this.listeners) f(e);
  }

  /** Runs `f` after everything queued before it: state changes never interleave. */
  serial<T>(f: () => Promise<T>): Promise<T> {
    const next = this.chain.then(f, f);
    this.chain = next.catch(() => undefined);
    return next;
  }

  // ---- opening, registering, linking

  static async hasProfile(db: Db): Promise<boolean> {
    return (await db.get('keyfile')) !== undefined;
  }

  static async open(db: Db, passphrase: string): Promise<Messenger> {
    const keyFile = await db.get<KeyFile>('keyfile');
    if (!keyFile) throw new Error('there is no account in this browser yet');
    const vault = await Vault.open(passphrase, keyFile);
    const sealed = await db.get<string>('state');
    if (!sealed) throw new Error('the stored account is incomplete; clear it and link this browser again');
    const state = vault.openJson<State>('kith-web-state-v2', sealed);
    if (state.version !== 2) throw new Error('the stored account was made by an older client and cannot be used; clear it');
    const m = new Messenger(db, vault, state);
    // Decode every session now: a damaged one is reported on opening, not mid-conversation.
    for (const key of Object.keys(state.sessions)) m.sessionsWith(key);
    return m;
  }

  static async register(db: Db, username: string, password: string, passphrase: string): Promise<Messenger> {
    const auth = await new Api().register(username, password, randomDeviceId());
    const user = UserIdentity.generate(rng);
    const device = DeviceIdentity.generate(rng);
    const certificate = user.certify(auth.userId, auth.deviceId, device.public);
    return Messenger.start(db, passphrase, auth, user, device, certificate);
  }

  /** Logs in on a browser holding the account already (refreshes the token). */
  async relogin(password: string): Promise<void> {
    const name = this.state.userId.split('@')[0];
    const auth = await new Api().login(name, password, this.state.deviceId);
    this.state.token = auth.token;
    this.api.token = auth.token;
    await this.save();
  }

  /**
   * Links this browser as a new device of an existing account: logs in with the password,
   * sends the link request to the account and waits for the device showing `code` to answer.
   */
  static async link(db: Db, code: string, password: string, passphrase: string, waitMs = 10 * 60 * 1000): Promise<Messenger> {
    const parsed = parseLinkCode(code);
    const name = parsed.userId.split('@')[0];
    const api = new Api();
    const auth = await api.login(name, password, randomDeviceId());
    if (auth.userId !== parsed.userId) throw new Error(`the code is for ${parsed.userId}, but this server knows the account as ${auth.userId}`);
    api.token = auth.token;
    const device = DeviceIdentity.generate(rng);
    const request = newLinkRequest(parsed, auth.deviceId, device, rng);
    const ws = new WebSocket(wsUrl(auth.token));
    const linked = await new Promise<ReturnType<typeof openLinkResponse>>((resolve, reject) => {
      const timer = setTimeout(() => {
        ws.close();
        reject(new Error('the device showing the code did not answer in time'));
      }, waitMs);
      ws.onerror = () => reject(new NetworkError());
      ws.onopen = () => {
        api.send(auth.userId, auth.userId, JSON.stringify({ v: 2, kind: 'kith.link', body: toBase64(request.bytes) }), randomId()).catch(reject);
      };
      ws.onmessage = (ev) => {
        let frame: { type?: string } & Partial<ServerMessage>;
        try {
          frame = JSON.parse(String(ev.data));
        } catch {
          return;
        }
        if (frame.type !== 'message' || frame.senderId !== auth.userId || !frame.message) return;
        let env: EnvelopeJson;
        try {
          env = JSON.parse(frame.message);
        } catch {
          return;
        }
        if (env.kind !== 'kith.link' || typeof env.body !== 'string') return;
        try {
          const result = openLinkResponse(parsed.secret, request, fromBase64(env.body));
          ws.send(JSON.stringify({ type: 'ack', messageId: frame.messageId }));
          clearTimeout(timer);
          ws.close();
          resolve(result);
        } catch {
          /* not the answer to this request (our own request, or another link) */
        }
      };
    });
    return Messenger.start(db, passphrase, auth, linked.userIdentity, device, linked.certificate);
  }

  private static async start(db: Db, passphrase: string, auth: { userId: string; deviceId: number; token: string }, user: UserIdentity, device: DeviceIdentity, certificate: DeviceCertificate): Promise<Messenger> {
    const spk = SignedPreKey.generate(1, device, rng);
    const { vault, keyFile } = await Vault.create(passphrase);
    const state: State = {
      version: 2,
      userId: auth.userId,
      deviceId: auth.deviceId,
      token: auth.token,
      userIdentity: hex(user.toBytes()),
      device: hex(device.toBytes()),
      certificate: hex(certificate.toBytes()),
      signedPreKeys: [{ key: hex(spk.toBytes()), created: Date.now() }],
      oneTimePreKeys: {},
      nextPreKeyId: 1,
      replay: hex(new ReplayRecord().toBytes()),
      keysPublished: false,
      contacts: {},
      sessions: {},
      processed: [],
      outbox: [],
      conversations: {},
    };
    const m = new Messenger(db, vault, state);
    await db.clear();
    await db.put({ keyfile: keyFile });
    await m.save();
    await m.replenishPrekeys();
    return m;
  }

  /**
   * Shows a code for another device to join this account (`kith-chat link accept <code>`), and
   * answers the first link request made with it: certifies the new device and hands it the
   * account's identity. Resolves with the new device's id.
   */
  linkOffer(waitMs = 10 * 60 * 1000): { code: string; linked: Promise<number>; cancel: () => void } {
    const secret = generateLinkSecret(rng);
    const code = linkCodeText({ userId: this.state.userId, secret });
    let cancel = () => {};
    const linked = new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.linkWaiter = null;
        reject(new Error('no device asked to be linked in time'));
      }, waitMs);
      cancel = () => {
        clearTimeout(timer);
        this.linkWaiter = null;
        reject(new Error('linking was cancelled'));
      };
      this.linkWaiter = (bytes) => {
        let opened;
        try {
          opened = openLinkRequest(secret, bytes);
        } catch {
          return false;
        }
        if (opened.userId !== this.state.userId || opened.deviceId === this.state.deviceId) return false;
        this.linkWaiter = null;
        clearTimeout(timer);
        const response = newLinkResponse(secret, opened, this.user, rng);
        this.api
          .send(this.state.userId, this.state.userId, JSON.stringify({ v: 2, kind: 'kith.link', body: toBase64(response) }), randomId())
          .then(() => {
            this.markStale(this.state.userId);
            resolve(opened.deviceId);
          }, reject);
        return true;
      };
    });
    return { code, linked, cancel };
  }

  // ---- keys

  // Decoded once: decoding verifies signatures, which costs milliseconds in JavaScript.
  private decoded: { user?: UserIdentity; device?: DeviceIdentity; certificate?: DeviceCertificate } = {};
  private sessionCache = new Map<string, Session[]>();

  private get user(): UserIdentity {
    return (this.decoded.user ??= UserIdentity.fromBytes(unhex(this.state.userIdentity)));
  }
  private get device(): DeviceIdentity {
    return (this.decoded.device ??= DeviceIdentity.fromBytes(unhex(this.state.device)));
  }
  private get certificate(): DeviceCertificate {
    return (this.decoded.certificate ??= DeviceCertificate.fromBytes(unhex(this.state.certificate)));
  }

  /** The sessions with one remote device, the one in use first (decoded once, then kept). */
  private sessionsWith(key: string): Session[] {
    let list = this.sessionCache.get(key);
    if (!list) {
      list = (this.state.sessions[key] ?? []).map((b) => Session.fromBytes(unhex(b)));
      this.sessionCache.set(key, list);
    }
    return list;
  }

  /** Writes the sessions with one device back into the persisted state. */
  private keepSessions(key: string, list: Session[]): void {
    const kept = list.slice(0, MAX_SESSIONS);
    this.sessionCache.set(key, kept);
    this.state.sessions[key] = kept.map((x) => hex(x.toBytes()));
  }

  /** Publishes keys on first start, and tops up one-time prekeys below 20 (to 100). */
  async replenishPrekeys(): Promise<void> {
    let have = 0;
    if (this.state.keysPublished) have = (await this.api.keyCount()).oneTimePreKeys;
    if (this.state.keysPublished && have >= PREKEY_LOW) return;
    const fresh = OneTimePreKey.generateBatch(this.state.nextPreKeyId, PREKEY_TARGET - have, rng);
    for (const k of fresh) this.state.oneTimePreKeys[k.id] = hex(k.toBytes());
    this.state.nextPreKeyId += fresh.length;
    await this.save();
    const spk = SignedPreKey.fromBytes(unhex(this.state.signedPreKeys[0].key));
    await this.api.publishKeys({
      identity: toBase64(this.device.public.toBytes()),
      signedPreKey: toBase64(spk.public.toBytes()),
      oneTimePreKeys: fresh.map((k) => toBase64(k.public.toBytes())),
      certificate: toBase64(this.certificate.toBytes()),
      resetUserIdentity: false,
    });
    this.state.keysPublished = true;
    await this.save();
  }

  // ---- persistence

  private async save(extra: Record<string, unknown> = {}): Promise<void> {
    if (this.state.processed.length > PROCESSED_KEPT) this.state.processed = this.state.processed.slice(-PROCESSED_KEPT);
    await this.db.put({ state: this.vault.sealJson('kith-web-state-v2', this.state), ...extra });
  }

  private historyKey(peer: string): string {
    return `history:${hex(utf8(peer))}`;
  }

  async history(peer: string): Promise<Entry[]> {
    let h = this.histories.get(peer);
    if (!h) {
      const sealed = await this.db.get<string>(this.historyKey(peer));
      h = sealed ? this.vault.openJson<Entry[]>(`kith-web-history-v2:${peer}`, sealed) : [];
      this.histories.set(peer, h);
    }
    return h;
  }

  /** Saves the state and the conversations in `peers` in one transaction. */
  private async saveWith(peers: string[]): Promise<void> {
    const extra: Record<string, unknown> = {};
    for (const p of peers) extra[this.historyKey(p)] = this.vault.sealJson(`kith-web-history-v2:${p}`, await this.history(p));
    await this.save(extra);
  }

  private touch(peer: string, entry: Entry, unread: boolean): void {
    const c: ConversationMeta = this.state.conversations[peer] ?? { peer, last: '', lastAt: '', unread: 0 };
    c.last = entry.text ?? `(${entry.problem ?? 'could not be read'})`;
    c.lastAt = entry.at;
    if (unread) c.unread += 1;
    this.state.conversations[peer] = c;
  }

  conversations(): ConversationMeta[] {
    return Object.values(this.state.conversations).sort((a, b) => (a.lastAt < b.lastAt ? 1 : -1));
  }

  // ---- devices and trust

  resolve(user: string): string {
    const u = user.trim().toLowerCase();
    return u.includes('@') ? u : `${u}@${this.state.userId.split('@')[1]}`;
  }

  private contact(user: string): Contact {
    let c = this.state.contacts[user];
    if (!c) {
      c = { identity: null, changedIdentity: null, devices: {}, removals: [], fetchedAt: 0 };
      this.state.contacts[user] = c;
    }
    return c;
  }

  private trustedIdentity(user: string): UserIdentityPublic | null {
    if (user === this.state.userId) return this.user.public;
    const id = this.state.contacts[user]?.identity;
    return id ? new UserIdentityPublic(unhex(id)) : null;
  }

  /** Fetches a user's device list and keeps the devices the pinned identity certified. */
  async refresh(user: string): Promise<void> {
    const res = await this.api.devices(user);
    const c = this.contact(user);
    c.fetchedAt = Date.now();
    if (user !== this.state.userId && res.userIdentity) {
      const presented = hex(UserIdentityPublic.fromBytes(fromBase64(res.userIdentity)).key);
      if (c.identity === null) c.identity = presented;
      else if (presented !== c.identity && c.changedIdentity !== presented) {
        c.changedIdentity = presented;
        this.emit({ kind: 'identityChanged', user });
      }
    }
    const trusted = this.trustedIdentity(user);
    if (!trusted) return;
    for (const r of res.removals ?? []) {
      try {
        const removal = DeviceRemoval.fromBytes(fromBase64(r));
        if (removal.userKey.equals(trusted) && removal.userId === user && !c.removals.includes(hex(removal.toBytes()))) c.removals.push(hex(removal.toBytes()));
      } catch {
        /* a removal that does not verify is ignored */
      }
    }
    const devices: Record<string, string> = {};
    for (const d of res.devices) {
      if (user === this.state.userId && d.deviceId === this.state.deviceId) continue;
      const why = this.checkDevice(user, d.deviceId, d.bundle, d.certificate, trusted, c);
      if (why) this.emit({ kind: 'warning', text: `NOT writing to device ${d.deviceId} of ${user}: ${why}` });
      else devices[d.deviceId] = hex(DeviceCertificate.fromBytes(fromBase64(d.certificate!)).toBytes());
    }
    c.devices = devices;
  }

  private checkDevice(user: string, id: number, bundle: string, certificate: string | undefined, trusted: UserIdentityPublic, c: Contact): string | null {
    if (!certificate) return `it has no certificate by the identity of ${user}`;
    try {
      const cert = DeviceCertificate.fromBytes(fromBase64(certificate));
      PreKeyBundle.fromBytes(fromBase64(bundle)).verify(cert, trusted, user, id);
      if (c.removals.some((r) => DeviceRemoval.fromBytes(unhex(r)).revokes(cert))) return 'it was removed by its account';
      return null;
    } catch (e) {
      return `it is not signed by the identity of ${user} (${(e as Error).message})`;
    }
  }

  private async refreshIfNeeded(user: string): Promise<void> {
    const c = this.state.contacts[user];
    if (!c || Date.now() - c.fetchedAt > DEVICE_LIST_MAX_AGE_MS) await this.refresh(user);
  }

  markStale(user: string): void {
    const c = this.state.contacts[user];
    if (c) c.fetchedAt = 0;
  }

  /** The safety number with `peer` (refreshing the pinned identity first). */
  async safetyNumber(peer: string): Promise<string | null> {
    await this.refreshIfNeeded(peer);
    const their = this.trustedIdentity(peer);
    if (!their) return null;
    return safetyNumber(this.user.public, this.state.userId, their, peer);
  }

  identityChanged(peer: string): boolean {
    return !!this.state.contacts[peer]?.changedIdentity;
  }

  /** Accepts a changed identity: forgets the old identity's devices and sessions. */
  async trust(peer: string): Promise<void> {
    const c = this.contact(peer);
    if (!c.changedIdentity) return;
    c.identity = c.changedIdentity;
    c.changedIdentity = null;
    c.devices = {};
    c.removals = [];
    c.fetchedAt = 0;
    for (const k of Object.keys(this.state.sessions))
      if (k.startsWith(`${peer}|`)) {
        delete this.state.sessions[k];
        this.sessionCache.delete(k);
      }
    await this.save();
  }

  // ---- sending

  private recipients(to: string): [string, number][] {
    const out: [string, number][] = [];
    for (const u of to === this.state.userId ? [to] : [to, this.state.userId])
      for (const d of Object.keys(this.state.contacts[u]?.devices ?? {})) out.push([u, Number(d)]);
    return out;
  }

  private async ensureSessions(recipients: [string, number][]): Promise<void> {
    const missing = new Set(recipients.filter(([u, d]) => !this.state.sessions[`${u}|${d}`]?.length).map(([u]) => u));
    for (const user of missing) {
      const res = await this.api.claim(user);
      const trusted = this.trustedIdentity(user);
      if (!trusted) continue;
      for (const d of res.devices) {
        const key = `${user}|${d.deviceId}`;
        if (this.state.sessions[key]?.length || !this.state.contacts[user]?.devices[d.deviceId] || !d.certificate) continue;
        try {
          const cert = DeviceCertificate.fromBytes(fromBase64(d.certificate));
          const verified = PreKeyBundle.fromBytes(fromBase64(d.bundle)).verify(cert, trusted, user, d.deviceId);
          this.keepSessions(key, [Session.initiate(this.device, this.certificate, verified, rng)]);
        } catch (e) {
          this.emit({ kind: 'warning', text: `cannot set up a session with device ${d.deviceId} of ${user}: ${(e as Error).message}` });
        }
      }
    }
  }

  private encryptFor(user: string, device: number, payload: Uint8Array): Uint8Array {
    const key = `${user}|${device}`;
    const sessions = this.sessionsWith(key);
    const wire = sessions[0].encrypt(payload, rng);
    this.keepSessions(key, sessions);
    return wire;
  }

  /** Encrypts `text` for every reading device, stores it, then hands it to the node (queued while offline). */
  async send(to: string, text: string): Promise<Entry> {
    return this.serial(async () => {
      if (this.identityChanged(to)) throw new Error(`the identity of ${to} changed: compare safety numbers and accept it before writing`);
      // Offline with a device list already known: write to it now, the outbox sends later.
      const known = (u: string) => Object.keys(this.state.contacts[u]?.devices ?? {}).length > 0 || (u === this.state.userId && this.state.contacts[u] !== undefined);
      for (const u of to === this.state.userId ? [to] : [to, this.state.userId]) {
        try {
          await this.refreshIfNeeded(u);
        } catch (e) {
          if (!(e instanceof NetworkError && known(u))) throw e;
        }
      }
      const recipients = this.recipients(to);
      if (!recipients.some(([u]) => u === to)) throw new Error(`${to} has no device this browser can write to`);
      await this.ensureSessions(recipients);
      const payload = utf8(JSON.stringify({ to, text }));
      const copies = recipients
        .filter(([u, d]) => this.state.sessions[`${u}|${d}`]?.length)
        .map(([userId, deviceId]) => ({ userId, deviceId, body: toBase64(this.encryptFor(userId, deviceId, payload)) }));
      const message = JSON.stringify({ v: 2, kind: 'kith.e2ee', from: { deviceId: this.state.deviceId }, to: copies });
      if (message.length > 65536) throw new Error('the message is too long');
      const localId = `local-${randomId()}`;
      const out: Outgoing = { clientMessageId: randomId(), to, text, message, localId };
      const entry: Entry = { id: localId, from: this.state.userId, to, at: new Date().toISOString(), text, status: 'pending' };
      (await this.history(to)).push(entry);
      this.touch(to, entry, false);
      this.state.outbox.push(out);
      await this.saveWith([to]);
      this.emit({ kind: 'changed' });
      await this.deliver(out).catch(() => undefined);
      return entry;
    });
  }

  private async deliver(out: Outgoing): Promise<void> {
    let res;
    try {
      res = await this.api.send(this.state.userId, out.to, out.message, out.clientMessageId);
    } catch (e) {
      if (e instanceof ApiError && [400, 403, 404, 413].includes(e.status)) {
        this.state.outbox = this.state.outbox.filter((o) => o.clientMessageId !== out.clientMessageId);
        const h = await this.history(out.to);
        const entry = h.find((x) => x.id === out.localId);
        if (entry) entry.problem = `not sent: ${e.message}`;
        await this.saveWith([out.to]);
        this.emit({ kind: 'changed' });
      }
      throw e;
    }
    const h = await this.history(out.to);
    const entry = h.find((x) => x.id === out.localId);
    if (entry) {
      entry.id = res.messageId;
      entry.at = res.timestamp;
      if (entry.status === 'pending') entry.status = 'sent';
    }
    this.state.processed.push(res.messageId);
    this.state.outbox = this.state.outbox.filter((o) => o.clientMessageId !== out.clientMessageId);
    await this.saveWith([out.to]);
    this.emit({ kind: 'changed' });
  }

  /** Sends what the node has not confirmed yet, in order; stops at the first transport failure. */
  async flushOutbox(): Promise<void> {
    return this.serial(async () => {
      for (const out of [...this.state.outbox]) {
        try {
          await this.deliver(out);
        } catch (e) {
          if (e instanceof NetworkError || (e instanceof ApiError && e.status >= 500)) return;
        }
      }
    });
  }

  // ---- receiving

  /** Handles one pushed message; resolves once the outcome is stored (then the caller acks). */
  async receive(m: ServerMessage): Promise<{ peer: string | null }> {
    return this.serial(async () => {
      if (this.state.processed.includes(m.messageId)) return { peer: null };
      const me = this.state.userId;
      const peer = m.senderId === me ? m.receiverId : m.senderId;
      let env: EnvelopeJson | null = null;
      try {
        const v = JSON.parse(m.message);
        if (v && typeof v === 'object' && (v.kind === 'kith.e2ee' || v.kind === 'kith.link')) env = v;
      } catch {
        /* plain text */
      }
      if (env?.kind === 'kith.link') {
        if (m.senderId === me && m.receiverId === me && typeof env.body === 'string' && this.linkWaiter) this.linkWaiter(fromBase64(env.body));
        this.state.processed.push(m.messageId);
        await this.save();
        return { peer: null };
      }
      const entry: Entry = { id: m.messageId, from: m.senderId, to: m.receiverId, at: m.timestamp, text: null };
      if (!env) {
        entry.text = m.message;
        entry.unencrypted = true;
      } else {
        const outcome = this.open(m, env);
        if (outcome === 'skip') {
          this.state.processed.push(m.messageId);
          await this.save();
          return { peer: null };
        }
        if (typeof outcome === 'string') entry.text = outcome;
        else entry.problem = outcome.problem;
      }
      if (m.senderId === me) entry.status = 'sent';
      (await this.history(peer)).push(entry);
      this.touch(peer, entry, m.senderId !== me);
      this.state.processed.push(m.messageId);
      await this.saveWith([peer]);
      this.emit({ kind: 'changed' });
      return { peer };
    });
  }

  /** Decrypts an envelope: the text, 'skip' for a control message, or why it cannot be read. */
  private open(m: ServerMessage, env: EnvelopeJson): string | 'skip' | { problem: string } {
    if (env.v === 1) return { problem: 'sent by a client that speaks end-to-end protocol version 1, which this client no longer reads; the sender must update' };
    if (env.v !== 2 || !Array.isArray(env.to) || typeof env.from?.deviceId !== 'number') return { problem: 'a malformed encrypted message' };
    const mine = env.to.find((t) => t.userId === this.state.userId && t.deviceId === this.state.deviceId);
    if (!mine || typeof mine.body !== 'string') return env.control === true ? 'skip' : { problem: 'not encrypted for this device' };
    const fromDevice = env.from.deviceId as number;
    let bytes: Uint8Array;
    try {
      bytes = fromBase64(mine.body);
    } catch {
      return { problem: 'a malformed encrypted message' };
    }
    let plaintext: Uint8Array;
    try {
      const t0 = performance.now();
      plaintext = this.decrypt(m.senderId, fromDevice, bytes);
      // Read by the benchmark in web/e2e (docs/benchmarks.md); no content, only a duration.
      performance.measure('kith-decrypt', { start: t0, end: performance.now() });
    } catch (e) {
      return { problem: `could not be decrypted: ${(e as Error).message}` };
    }
    let payload: { to?: unknown; text?: unknown; control?: unknown };
    try {
      payload = JSON.parse(fromUtf8(plaintext));
    } catch {
      return { problem: 'the decrypted message is malformed' };
    }
    if (payload.to !== m.receiverId) return { problem: 'the message was written to someone else' };
    if (payload.control !== undefined) return 'skip';
    if (typeof payload.text !== 'string') return { problem: 'the decrypted message is malformed' };
    return payload.text;
  }

  private decrypt(sender: string, fromDevice: number, bytes: Uint8Array): Uint8Array {
    const key = `${sender}|${fromDevice}`;
    const sessions = this.sessionsWith(key);
    const now = Date.now();
    const info = inspect(bytes);
    if (info.kind === 'prekey') {
      const cert = info.certificate;
      if (cert.userId !== sender || cert.deviceId !== fromDevice) throw new Error('the first message names another sender');
      const c = sender === this.state.userId ? null : this.contact(sender);
      let trusted = this.trustedIdentity(sender);
      if (!trusted && c) {
        c.identity = hex(cert.userKey.key);
        trusted = cert.userKey;
      } else if (trusted && !cert.userKey.equals(trusted) && c) {
        c.changedIdentity = hex(cert.userKey.key);
        this.emit({ kind: 'identityChanged', user: sender });
      }
      if (c?.removals.some((r) => DeviceRemoval.fromBytes(unhex(r)).revokes(cert))) throw new Error('the sending device was removed by its account');
      for (let i = 0; i < sessions.length; i++) {
        const s = sessions[i];
        if (s.matchesPrekeyMessage(info)) {
          const d = s.decrypt(bytes, now);
          this.promote(key, sessions, i);
          this.reportLost(sender, fromDevice, d.lost);
          return d.plaintext;
        }
      }
      const spkHex = this.state.signedPreKeys.map((k) => SignedPreKey.fromBytes(unhex(k.key))).find((k) => k.id === info.setup.signedPreKeyId);
      if (!spkHex) throw new Error('it names a signed prekey this device no longer has; a new session is needed');
      const otpkId = info.setup.oneTimePreKeyId;
      let otpk: OneTimePreKey | null = null;
      if (otpkId !== null) {
        const stored = this.state.oneTimePreKeys[otpkId];
        if (!stored) throw new Error('it names a one-time prekey this device no longer has (a replay, or an old session)');
        otpk = OneTimePreKey.fromBytes(unhex(stored));
      }
      const replay = ReplayRecord.fromBytes(unhex(this.state.replay));
      const { session, decrypted } = Session.respond(this.device, this.certificate, spkHex, otpk, replay, bytes, now);
      this.state.replay = hex(replay.toBytes());
      if (otpkId !== null) delete this.state.oneTimePreKeys[otpkId];
      this.keepSessions(key, [session, ...sessions]);
      if (c && !c.devices[fromDevice] && trusted && cert.userKey.equals(trusted)) c.fetchedAt = 0;
      return decrypted.plaintext;
    }
    let last: unknown = new Error('no session with that device');
    for (let i = 0; i < sessions.length; i++) {
      const s = sessions[i];
      try {
        const d = s.decrypt(bytes, now);
        this.promote(key, sessions, i);
        this.reportLost(sender, fromDevice, d.lost);
        return d.plaintext;
      } catch (e) {
        last = e;
      }
    }
    throw last;
  }

  /** Puts the session that just worked first, and persists the list. */
  private promote(key: string, list: Session[], i: number): void {
    if (i > 0) list.unshift(...list.splice(i, 1));
    this.keepSessions(key, list);
  }

  private reportLost(sender: string, device: number, lost: number): void {
    if (lost > 0) this.emit({ kind: 'warning', text: `${lost} message(s) from device ${device} of ${sender} never arrived and can no longer be read` });
  }

  /** A receipt for one of our messages: statuses only move forward. */
  async receipt(messageId: string, status: 'delivered' | 'read'): Promise<void> {
    return this.serial(async () => {
      const order: Status[] = ['pending', 'sent', 'delivered', 'read'];
      for (const peer of Object.keys(this.state.conversations)) {
        const e = (await this.history(peer)).find((x) => x.id === messageId);
        if (e && e.status && order.indexOf(status) > order.indexOf(e.status)) {
          e.status = status;
          await this.saveWith([peer]);
          this.emit({ kind: 'changed' });
          return;
        }
      }
    });
  }

  /** Marks a conversation read; returns the ids of the peer's messages to send `read` for. */
  async markRead(peer: string): Promise<string[]> {
    return this.serial(async () => {
      const c = this.state.conversations[peer];
      if (!c || c.unread === 0) return [];
      const h = await this.history(peer);
      const ids = h.slice(-c.unread).filter((e) => e.from === peer).map((e) => e.id);
      c.unread = 0;
      await this.save();
      this.emit({ kind: 'changed' });
      return ids;
    });
  }

  startConversation(peer: string): void {
    if (!this.state.conversations[peer]) this.state.conversations[peer] = { peer, last: '', lastAt: new Date().toISOString(), unread: 0 };
  }
}

export function wsUrl(token: string): string {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${proto}//${location.host}/api/v1/ws?token=${encodeURIComponent(token)}`;
}
