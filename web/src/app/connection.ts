// The WebSocket to the node: reconnects with exponential backoff (0.5 s doubling to 30 s, with
// jitter), acknowledges each message once its outcome is stored, flushes the outbox on connect.
import { Messenger, wsUrl } from './messenger';

export type ConnState = 'connecting' | 'online' | 'offline';

const BACKOFF_START_MS = 500;
const BACKOFF_MAX_MS = 30_000;

export interface Presence {
  status: string;
  lastSeen: string | null;
}

export class Connection {
  state: ConnState = 'connecting';
  presence = new Map<string, Presence>();
  viewing: string | null = null;
  private ws: WebSocket | null = null;
  private backoff = BACKOFF_START_MS;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private closed = false;
  onChange: () => void = () => {};
  onFatal: (why: string) => void = () => {};

  constructor(private readonly m: Messenger) {
    addEventListener('online', () => this.retryNow());
    // The browser knows the network is gone before the socket does: drop it and wait.
    addEventListener('offline', () => this.ws?.close());
  }

  start(): void {
    this.connect();
  }

  stop(): void {
    this.closed = true;
    this.ws?.close();
  }

  private set(s: ConnState): void {
    this.state = s;
    this.onChange();
  }

  private retryNow(): void {
    if (this.state === 'online' || this.closed) return;
    if (this.timer) clearTimeout(this.timer);
    this.backoff = BACKOFF_START_MS;
    this.connect();
  }

  private connect(): void {
    this.timer = null;
    if (!navigator.onLine) {
      this.set('offline');
      return;
    }
    this.set('connecting');
    const ws = new WebSocket(wsUrl(this.m.api.token));
    this.ws = ws;
    ws.onopen = () => {
      this.backoff = BACKOFF_START_MS;
      this.subscribed.clear();
      this.set('online');
      this.subscribe();
      this.m.flushOutbox().catch(() => undefined);
      this.m.replenishPrekeys().catch(() => undefined);
    };
    ws.onmessage = (ev) => this.frame(String(ev.data)).catch((e) => console.warn('frame', e));
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.closed) return;
      if (!navigator.onLine) {
        this.set('offline');
        return;
      }
      if (ev.code === 4001) {
        this.onFatal('Your login expired; log in again.');
        return;
      }
      this.set('offline');
      const delay = this.backoff * (0.75 + Math.random() / 2);
      this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX_MS);
      this.timer = setTimeout(() => this.connect(), delay);
    };
  }

  private subscribed = new Set<string>();

  /** Watches the presence of every conversation partner not watched yet on this connection. */
  subscribe(): void {
    const users = this.m.conversations().map((c) => c.peer).filter((u) => !this.subscribed.has(u));
    if (this.ws?.readyState !== WebSocket.OPEN || !users.length) return;
    for (const u of users) this.subscribed.add(u);
    this.ws.send(JSON.stringify({ type: 'presence.subscribe', userIds: users }));
  }

  send(frame: unknown): void {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(frame));
  }

  private async frame(text: string): Promise<void> {
    const f = JSON.parse(text);
    switch (f.type) {
      case 'message': {
        const { peer } = await this.m.receive(f);
        this.send({ type: 'ack', messageId: f.messageId });
        this.subscribe();
        if (peer && peer === this.viewing && document.visibilityState === 'visible') await this.markRead(peer);
        break;
      }
      case 'receipt':
        await this.m.receipt(f.messageId, f.status);
        break;
      case 'presence':
        this.presence.set(f.userId, { status: f.status, lastSeen: f.lastSeen });
        this.onChange();
        break;
      case 'keys.changed':
        this.m.markStale(f.userId);
        break;
      case 'error':
        console.warn('server error frame', f.code, f.message);
        break;
    }
  }

  async markRead(peer: string): Promise<void> {
    for (const id of await this.m.markRead(peer)) this.send({ type: 'read', messageId: id });
  }
}
