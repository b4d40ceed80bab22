// The screens: welcome (register / unlock / link), conversation list, conversation, safety number.
import { inWords } from './api';
import { Connection } from './connection';
import { Db } from './db';
import { h, mount } from './dom';
import { Messenger } from './messenger';
import { Entry } from './state';

const PAGE = 50;

function field(label: string, name: string, type = 'text', autocomplete = 'off'): HTMLElement {
  return h('label', {}, label, h('input', { name, type, autocomplete, required: true, 'data-testid': name }));
}

function formValues(form: HTMLFormElement): Record<string, string> {
  const out: Record<string, string> = {};
  for (const el of Array.from(form.elements)) if (el instanceof HTMLInputElement && el.name) out[el.name] = el.value;
  return out;
}

function errorBox(): HTMLElement {
  return h('p', { class: 'error', role: 'alert', 'data-testid': 'error' });
}

/** A form whose submit runs `action` with its values, showing progress and errors in words. */
function form(title: string, fields: HTMLElement[], button: string, action: (v: Record<string, string>, status: (t: string) => void) => Promise<void>, id: string): HTMLElement {
  const err = errorBox();
  const status = h('p', { class: 'status', 'data-testid': `${id}-status` });
  const submit = h('button', { type: 'submit', 'data-testid': `${id}-submit` }, button);
  const f = h('form', { class: 'card', 'data-testid': id }, h('h2', {}, title), ...fields, submit, status, err);
  f.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    err.textContent = '';
    submit.disabled = true;
    try {
      await action(formValues(f), (t) => (status.textContent = t));
    } catch (e) {
      err.textContent = inWords(e);
      status.textContent = '';
    } finally {
      submit.disabled = false;
    }
  });
  return f;
}

export class App {
  private m: Messenger | null = null;
  private conn: Connection | null = null;
  private open: string | null = null;
  private shown = PAGE;
  private screen: 'chat' | 'safety' = 'chat';
  private linking: { code: string; status: string; cancel: () => void } | null = null;
  private notice = '';

  constructor(
    private readonly root: HTMLElement,
    private readonly db: Db,
  ) {}

  async welcome(): Promise<void> {
    const has = await Messenger.hasProfile(this.db);
    const started = (m: Messenger) => this.started(m);
    const unlock = form(
      'Unlock',
      [h('p', {}, 'This browser holds an account. Its keys and history are encrypted with your passphrase.'), field('Passphrase', 'passphrase', 'password', 'current-password')],
      'Unlock',
      async (v, status) => {
        status('Opening…');
        started(await Messenger.open(this.db, v.passphrase));
      },
      'unlock',
    );
    const register = form(
      'Create an account',
      [field('Username', 'username', 'text', 'username'), field('Password (for the server)', 'password', 'password', 'new-password'), field('Passphrase (encrypts this browser’s copy)', 'passphrase', 'password', 'new-password')],
      'Register',
      async (v, status) => {
        status('Creating your keys…');
        started(await Messenger.register(this.db, v.username, v.password, v.passphrase));
      },
      'register',
    );
    const link = form(
      'Link this browser to your account',
      [
        h('p', {}, 'On a device of your account run ', h('code', {}, 'kith-chat link'), ' and type the code it shows.'),
        field('Link code', 'code'),
        field('Password (for the server)', 'password', 'password', 'current-password'),
        field('Passphrase (encrypts this browser’s copy)', 'passphrase', 'password', 'new-password'),
      ],
      'Link',
      async (v, status) => {
        status('Waiting for your other device to answer…');
        started(await Messenger.link(this.db, v.code, v.password, v.passphrase));
      },
      'link',
    );
    const note = h('p', { class: 'hint' }, 'Logging in with a password alone is not enough to read your messages here: a new browser joins your account by linking.');
    mount(this.root, h('main', { class: 'welcome' }, h('h1', {}, 'kith'), has ? unlock : h('div', { class: 'cards' }, register, link, note)));
  }

  private started(m: Messenger): void {
    this.m = m;
    const conn = new Connection(m);
    this.conn = conn;
    conn.onChange = () => this.render();
    conn.onFatal = (why) => {
      this.notice = why;
      this.render();
    };
    m.on((e) => {
      if (e.kind === 'warning') this.notice = e.text;
      if (e.kind === 'identityChanged') this.notice = `The identity of ${e.user} changed. Compare safety numbers before writing again.`;
      this.render();
    });
    document.addEventListener('visibilitychange', () => {
      if (this.open && document.visibilityState === 'visible') conn.markRead(this.open);
    });
    conn.start();
    this.render();
  }

  private async render(): Promise<void> {
    const m = this.m!;
    const conn = this.conn!;
    const stateText = { connecting: 'connecting…', online: 'online', offline: 'offline — reconnecting…' }[conn.state];
    const header = h(
      'header',
      {},
      h('strong', {}, 'kith'),
      h('span', { class: 'me', 'data-testid': 'me' }, m.userId),
      h('span', { class: `conn ${conn.state}`, 'data-testid': 'connection' }, stateText),
      h('button', { class: 'link-device', 'data-testid': 'link-device', onclick: () => this.startLinking() }, 'Link a device'),
    );
    const notice = this.notice ? h('p', { class: 'notice', role: 'status', 'data-testid': 'notice', onclick: () => ((this.notice = ''), this.render()) }, this.notice) : null;
    const list = this.conversationList();
    const main = this.linking ? this.linkScreen() : this.open ? (this.screen === 'safety' ? await this.safetyScreen(this.open) : await this.conversation(this.open)) : h('section', { class: 'empty' }, h('p', {}, 'Choose a conversation, or start one with a username.'));
    const scroll = this.root.querySelector('.messages');
    const atBottom = !scroll || scroll.scrollHeight - scroll.scrollTop - scroll.clientHeight < 40;
    const prevHeight = scroll?.scrollHeight ?? 0;
    const prevTop = scroll?.scrollTop ?? 0;
    const focused = document.activeElement instanceof HTMLInputElement ? document.activeElement.name : null;
    const draft = (this.root.querySelector('input[name=text]') as HTMLInputElement | null)?.value ?? '';
    mount(this.root, h('div', { class: `app ${this.open ? 'has-open' : ''}` }, header, notice ?? '', h('div', { class: 'panes' }, list, main)));
    const input = this.root.querySelector('input[name=text]') as HTMLInputElement | null;
    if (input) input.value = draft;
    if (focused) (this.root.querySelector(`input[name=${focused}]`) as HTMLInputElement | null)?.focus();
    const box = this.root.querySelector('.messages');
    if (box) box.scrollTop = atBottom ? box.scrollHeight : prevTop + (box.scrollHeight - prevHeight) * (this.keepTop ? 1 : 0);
    this.keepTop = false;
  }

  private keepTop = false;

  private startLinking(): void {
    const offer = this.m!.linkOffer();
    this.linking = { code: offer.code, status: 'Waiting for the other device…', cancel: offer.cancel };
    offer.linked.then(
      (device) => {
        if (this.linking) this.linking.status = `Linked device ${device}. Your contacts will see it as a device of yours; your safety numbers stay the same.`;
        this.render();
      },
      (e) => {
        if (this.linking) this.linking.status = inWords(e);
        this.render();
      },
    );
    this.render();
  }

  private linkScreen(): HTMLElement {
    const l = this.linking!;
    return h(
      'section',
      { class: 'safety', 'data-testid': 'link-screen' },
      h('div', { class: 'top' }, h('strong', {}, 'Link a device to your account')),
      h('p', {}, 'On the new device run the command below (or type the code into another browser’s “Link” form). Type it only on your own device: it makes that device yours.'),
      h('pre', { class: 'number', 'data-testid': 'link-code' }, `kith-chat link accept ${l.code}`),
      h('p', { 'data-testid': 'link-status' }, l.status),
      h('p', {}, h('button', { 'data-testid': 'link-done', onclick: () => { l.cancel(); this.linking = null; this.render(); } }, 'Done')),
    );
  }

  private conversationList(): HTMLElement {
    const m = this.m!;
    const start = h('form', { class: 'start', 'data-testid': 'start' }, h('input', { name: 'peer', placeholder: 'username or name@server', 'data-testid': 'peer', autocomplete: 'off' }), h('button', { type: 'submit', 'data-testid': 'start-submit' }, 'Chat'));
    start.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const v = (start.querySelector('input') as HTMLInputElement).value;
      if (!v.trim()) return;
      const peer = m.resolve(v);
      m.startConversation(peer);
      this.select(peer);
      this.conn!.subscribe();
    });
    const items = m.conversations().map((c) =>
      h(
        'li',
        { class: c.peer === this.open ? 'selected' : '', 'data-testid': 'conversation', 'data-peer': c.peer, onclick: () => this.select(c.peer) },
        h('span', { class: 'peer' }, c.peer),
        c.unread ? h('span', { class: 'badge', 'data-testid': 'unread' }, String(c.unread)) : null,
        h('span', { class: 'last', 'data-testid': 'last' }, c.last),
      ),
    );
    return h('nav', { class: 'list' }, start, h('ul', {}, ...items));
  }

  private select(peer: string): void {
    this.open = peer;
    this.conn!.viewing = peer;
    this.screen = 'chat';
    this.shown = PAGE;
    this.render();
    if (document.visibilityState === 'visible') this.conn!.markRead(peer);
  }

  private presenceText(peer: string): string {
    const p = this.conn!.presence.get(peer);
    if (!p) return '';
    if (p.status === 'online') return 'online';
    return p.lastSeen ? `last seen ${new Date(p.lastSeen).toLocaleString()}` : 'offline';
  }

  private async conversation(peer: string): Promise<HTMLElement> {
    const m = this.m!;
    const all = await m.history(peer);
    const entries = all.slice(-this.shown);
    const back = h('button', { class: 'back', title: 'Close the conversation', 'data-testid': 'close', onclick: () => ((this.open = null), (this.conn!.viewing = null), this.render()) }, '‹');
    const top = h(
      'div',
      { class: 'top' },
      back,
      h('div', {}, h('strong', { 'data-testid': 'peer-name' }, peer), h('div', { class: 'presence', 'data-testid': 'presence' }, this.presenceText(peer))),
      h('button', { 'data-testid': 'safety', onclick: () => ((this.screen = 'safety'), this.render()) }, 'Safety number'),
    );
    const warning = m.identityChanged(peer) ? h('p', { class: 'warning', 'data-testid': 'identity-changed' }, `The identity of ${peer} changed. Nothing is sent to them until you compare safety numbers and accept it.`) : null;
    const list = h('ol', { class: 'messages', 'data-testid': 'messages' }, all.length > entries.length ? h('li', { class: 'more' }, 'Scroll up for earlier messages') : null, ...entries.map((e) => this.message(e)));
    list.addEventListener('scroll', () => {
      if (list.scrollTop < 20 && this.shown < all.length) {
        this.shown += PAGE;
        this.keepTop = true;
        this.render();
      }
    });
    const composer = h('form', { class: 'composer', 'data-testid': 'composer' }, h('input', { name: 'text', placeholder: 'Message', autocomplete: 'off', 'data-testid': 'text' }), h('button', { type: 'submit', 'data-testid': 'send' }, 'Send'));
    composer.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const input = composer.querySelector('input') as HTMLInputElement;
      const text = input.value;
      if (!text.trim()) return;
      input.value = '';
      m.send(peer, text).catch((e) => {
        this.notice = inWords(e);
        this.render();
      });
    });
    return h('section', { class: 'conversation' }, top, warning, list, composer);
  }

  private message(e: Entry): HTMLElement {
    const mine = e.from === this.m!.userId;
    const ticks = { pending: '🕓', sent: '✓', delivered: '✓✓', read: '✓✓' } as const;
    const status = mine && e.status ? h('span', { class: `tick ${e.status}`, 'data-testid': 'status', 'data-status': e.status, title: e.status }, ticks[e.status]) : null;
    const body = e.text !== null ? h('span', { class: 'text', 'data-testid': 'text-body' }, e.text) : h('span', { class: 'problem', 'data-testid': 'problem' }, `This message could not be read: ${e.problem}`);
    return h(
      'li',
      { class: `msg ${mine ? 'mine' : 'theirs'}`, 'data-testid': 'message', 'data-id': e.id },
      body,
      e.unencrypted ? h('span', { class: 'unencrypted' }, 'not encrypted') : null,
      h('span', { class: 'meta' }, new Date(e.at).toLocaleTimeString(), ' ', status ?? ''),
    );
  }

  private async safetyScreen(peer: string): Promise<HTMLElement> {
    const m = this.m!;
    let number: string | null = null;
    let err = '';
    try {
      number = await m.safetyNumber(peer);
    } catch (e) {
      err = inWords(e);
    }
    const changed = m.identityChanged(peer);
    return h(
      'section',
      { class: 'safety', 'data-testid': 'safety-screen' },
      h('div', { class: 'top' }, h('button', { class: 'back', onclick: () => ((this.screen = 'chat'), this.render()) }, '‹'), h('strong', {}, `Safety number with ${peer}`)),
      h('p', {}, h('button', { 'data-testid': 'safety-back', onclick: () => ((this.screen = 'chat'), this.render()) }, 'Back to the conversation')),
      number ? h('pre', { class: 'number', 'data-testid': 'safety-number' }, number) : h('p', {}, err || `${peer} has no identity yet.`),
      h('p', {}, `Compare it with ${peer} in person or on a call (kith-chat safety-number). If it matches, no server is in the middle. It stays the same whichever devices either of you links.`),
      changed ? h('div', { class: 'warning' }, h('p', {}, `${peer} now presents a different identity. If you compared the new number with them, accept it.`), h('button', { 'data-testid': 'trust', onclick: async () => { await m.trust(peer); this.render(); } }, 'Accept the new identity')) : null,
    );
  }
}
