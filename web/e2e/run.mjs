// End-to-end tests of the web client in headless Chromium against a real node on loopback,
// with kith-chat as the other client. Run by ./scripts/test (after the Rust tests built the
// binaries) or directly: `node web/e2e/run.mjs`. Without Chromium the run is skipped with the
// reason printed, except under CI=true, where that is a failure.
//
// Environment: KITH_BIN_DIR (default <repo>/target/debug: kith and kith-chat),
// KITH_CHROMIUM (default /usr/bin/chromium), KITH_E2E_OUT (default <repo>/target/web-e2e).
import { spawn, execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { createServer } from 'node:net';
import assert from 'node:assert/strict';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const CI = process.env.CI === 'true';
const binDir = process.env.KITH_BIN_DIR ?? join(repo, 'target/debug');
const out = process.env.KITH_E2E_OUT ?? join(repo, 'target/web-e2e');
const chromiumPath = process.env.KITH_CHROMIUM ?? ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p));
const DEADLINE_MS = 30_000;
const PASSWORD = 'correct horse battery';
const PASSPHRASE = 'a long passphrase for the browser';

function skip(reason) {
  if (CI) {
    console.error(`web e2e: FAILED: ${reason} (CI=true: the browser tests must run)`);
    process.exit(1);
  }
  console.log(`web e2e: SKIPPED: ${reason}`);
  if (process.env.KITH_TEST_SKIP_LOG) writeFileSync(process.env.KITH_TEST_SKIP_LOG, `web e2e (${reason})\n`, { flag: 'a' });
  process.exit(0);
}

let chromium;
try {
  ({ chromium } = await import('playwright-core'));
} catch {
  skip('playwright-core is not installed (cd web && npm ci)');
}
if (!chromiumPath || !existsSync(chromiumPath)) skip('chromium is not installed (apt-get install chromium)');
for (const b of ['kith', 'kith-chat']) if (!existsSync(join(binDir, b))) skip(`${join(binDir, b)} is not built (cargo build -p kith-node -p kith-client)`);

const run = promisify(execFile);
mkdirSync(out, { recursive: true });

async function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
    s.on('error', rej);
  });
}

async function until(what, f, ms = DEADLINE_MS) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    try {
      const v = await f();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? `: ${last.message}` : ''}`);
}

// ---- the node
const dataDir = mkdtempSync(join(tmpdir(), 'kith-web-e2e-'));
const port = await freePort();
const base = `http://127.0.0.1:${port}`;
const node = spawn(join(binDir, 'kith'), ['serve', '--data-dir', dataDir, '--listen', `127.0.0.1:${port}`, '--p2p-listen', '/ip4/127.0.0.1/tcp/0', '--server-name', 'kith.test', '--account-rate', '100', '--account-burst', '100'], {
  stdio: ['ignore', 'ignore', 'pipe'],
  env: { ...process.env, KITH_LOG: 'warn' },
});
let nodeLog = '';
node.stderr.on('data', (d) => (nodeLog += d));
const stop = () => {
  node.kill('SIGTERM');
};
process.on('exit', stop);
await until('the node to answer /healthz', async () => (await fetch(`${base}/healthz`)).ok).catch((e) => {
  console.error(nodeLog);
  throw e;
});

const browser = await chromium.launch({ executablePath: chromiumPath, args: ['--no-sandbox'] });
const results = [];
async function test(name, f) {
  const t0 = Date.now();
  try {
    await f();
    results.push({ name, ok: true });
    console.log(`  PASS ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    results.push({ name, ok: false });
    console.log(`  FAIL ${name}: ${e.stack ?? e}`);
  }
}

// ---- page helpers
async function newUser(name, viewport = { width: 1000, height: 700 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.setDefaultTimeout(DEADLINE_MS);
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
  await page.goto(base);
  const form = page.getByTestId('register');
  await form.getByTestId('username').fill(name);
  await form.getByTestId('password').fill(PASSWORD);
  await form.getByTestId('passphrase').fill(PASSPHRASE);
  await form.getByTestId('register-submit').click();
  await page.getByTestId('me').waitFor();
  await until(`${name} online`, async () => (await page.getByTestId('connection').textContent()) === 'online');
  return { name, id: `${name}@kith.test`, context, page, errors };
}

async function openChat(u, peer) {
  const item = u.page.locator(`[data-testid=conversation][data-peer="${peer}"]`);
  if (await item.count()) await item.click();
  else {
    await u.page.getByTestId('peer').fill(peer);
    await u.page.getByTestId('start-submit').click();
  }
  await u.page.getByTestId('peer-name').filter({ hasText: peer }).waitFor();
}

async function send(u, text) {
  await u.page.getByTestId('text').fill(text);
  await u.page.getByTestId('send').click();
}

async function texts(u) {
  return u.page.getByTestId('text-body').allTextContents();
}

async function waitForTexts(u, wanted) {
  return until(`${u.name} to show ${JSON.stringify(wanted)}`, async () => {
    const got = await texts(u);
    return wanted.every((w) => got.includes(w)) && got;
  });
}

function statusOf(u, text) {
  return u.page.locator('[data-testid=message]', { has: u.page.getByTestId('text-body').getByText(text, { exact: true }) }).getByTestId('status').getAttribute('data-status');
}

async function unlock(u) {
  await u.page.getByTestId('unlock').getByTestId('passphrase').fill(PASSPHRASE);
  await u.page.getByTestId('unlock-submit').click();
  await u.page.getByTestId('me').waitFor();
}

function chat(args, env = {}) {
  return run(join(binDir, 'kith-chat'), ['--server', base, ...args], { env: { ...process.env, KITH_PASSWORD: PASSWORD, KITH_PASSPHRASE: 'cli passphrase', ...env }, timeout: DEADLINE_MS });
}

const figures = {};
console.log(`web e2e: node on ${base}, chromium ${browser.version()}`);

const alice = await newUser('alice');
const bob = await newUser('bob');

await test('two browsers chat in real time; ticks go sent → delivered → read', async () => {
  await openChat(alice, bob.id);
  // Record every status the first message shows, as it happens.
  await alice.page.evaluate(() => {
    window.__seen = [];
    new MutationObserver(() => {
      const s = document.querySelector('[data-testid=status]')?.getAttribute('data-status');
      if (s && window.__seen.at(-1) !== s) window.__seen.push(s);
    }).observe(document.body, { subtree: true, childList: true, attributes: true });
  });
  await send(alice, 'hello bob');
  // Bob has not opened the conversation: it is listed, unread, with the last message.
  const item = bob.page.locator(`[data-testid=conversation][data-peer="${alice.id}"]`);
  await item.getByTestId('unread').filter({ hasText: '1' }).waitFor();
  assert.equal(await item.getByTestId('last').textContent(), 'hello bob');
  await until('delivered', async () => (await statusOf(alice, 'hello bob')) === 'delivered');
  await openChat(bob, alice.id);
  await waitForTexts(bob, ['hello bob']);
  await until('read', async () => (await statusOf(alice, 'hello bob')) === 'read');
  const seen = await alice.page.evaluate(() => window.__seen);
  const order = ['pending', 'sent', 'delivered', 'read'];
  assert.deepEqual(seen.filter((s) => s !== 'pending'), ['sent', 'delivered', 'read'], `statuses seen: ${seen}`);
  assert.ok(seen.every((s, i) => i === 0 || order.indexOf(s) > order.indexOf(seen[i - 1])), `statuses only move forward: ${seen}`);
  await send(bob, 'hi alice');
  await waitForTexts(alice, ['hi alice']);
  await until('bob to see alice online', async () => (await bob.page.getByTestId('presence').textContent()) === 'online');
});

await test('offline, then reconnect: everything arrives once, in order', async () => {
  await bob.context.setOffline(true);
  await until('bob to show he is offline', async () => (await bob.page.getByTestId('connection').textContent())?.startsWith('offline'));
  await until('alice to see bob offline', async () => (await alice.page.getByTestId('presence').textContent())?.startsWith('last seen'));
  const batch = Array.from({ length: 6 }, (_, i) => `while you were away ${i + 1}`);
  for (const t of batch) await send(alice, t);
  await until('all sent', async () => {
    for (const t of batch) if ((await statusOf(alice, t)) !== 'sent') return false;
    return true;
  });
  await bob.context.setOffline(false);
  const got = await waitForTexts(bob, batch);
  for (const t of batch) assert.equal(got.filter((x) => x === t).length, 1, `"${t}" shown once`);
  assert.deepEqual(got.filter((x) => batch.includes(x)), batch, 'in the order sent');
  await until('bob online again', async () => (await bob.page.getByTestId('connection').textContent()) === 'online');
  await until('read after reconnect', async () => (await statusOf(alice, batch.at(-1))) === 'read');
});

await test('typed while offline: shown as pending, sent once on reconnect, in order', async () => {
  await alice.context.setOffline(true);
  await until('alice offline', async () => (await alice.page.getByTestId('connection').textContent())?.startsWith('offline'));
  const queued = ['typed offline 1', 'typed offline 2', 'typed offline 3'];
  for (const t of queued) await send(alice, t);
  for (const t of queued) await until(`"${t}" pending`, async () => (await statusOf(alice, t)) === 'pending');
  await alice.context.setOffline(false);
  const got = await waitForTexts(bob, queued);
  assert.deepEqual(got.filter((x) => queued.includes(x)), queued, 'once each, in order');
  for (const t of queued) await until(`"${t}" read`, async () => (await statusOf(alice, t)) === 'read');
});

await test('a second tab says another tab holds the session', async () => {
  const second = await alice.context.newPage();
  await second.goto(base);
  await second.getByTestId('other-tab').waitFor({ timeout: DEADLINE_MS });
  assert.equal(await second.getByTestId('unlock').count(), 0, 'the second tab does not open the account');
  await second.close();
});

await test('reload keeps history and sessions and shows nothing twice', async () => {
  const before = await texts(bob);
  const t0 = Date.now();
  await bob.page.reload();
  await unlock(bob);
  await openChat(bob, alice.id);
  await waitForTexts(bob, before);
  const after = await texts(bob);
  assert.deepEqual(after, before, 'the same messages, once each, after a reload');
  await send(alice, 'after your reload');
  await waitForTexts(bob, ['after your reload']);
  figures.reloadToMessageMs = Date.now() - t0;
  await send(bob, 'my sessions survived');
  await waitForTexts(alice, ['my sessions survived']);
  assert.deepEqual((await texts(bob)).filter((t) => t === 'after your reload').length, 1);
});

const carolDir = mkdtempSync(join(tmpdir(), 'kith-web-e2e-carol-'));
await test('a browser user and a kith-chat user exchange both ways; the store holds no plaintext', async () => {
  await chat(['--profile', carolDir, 'register', 'carol']);
  const carol = 'carol@kith.test';
  await openChat(alice, carol);
  await send(alice, 'hello carol from the browser');
  await until('the message stored', async () => (await statusOf(alice, 'hello carol from the browser')) === 'sent' || (await statusOf(alice, 'hello carol from the browser')) === 'delivered');
  const { stdout } = await chat(['--profile', carolDir, 'history', 'alice']);
  assert.match(stdout, /alice@kith\.test -> carol@kith\.test: hello carol from the browser/);
  await chat(['--profile', carolDir, 'send', 'alice', 'hello alice from the terminal']);
  await waitForTexts(alice, ['hello alice from the terminal']);
  await until('delivered to kith-chat', async () => ['delivered', 'read'].includes(await statusOf(alice, 'hello carol from the browser')));
  // Nothing anyone typed is in the node's files.
  const plaintexts = ['hello bob', 'hi alice', 'while you were away 3', 'after your reload', 'hello carol from the browser', 'hello alice from the terminal'];
  const files = readdirSync(dataDir, { recursive: true }).map((f) => join(dataDir, String(f))).filter((f) => { try { return readFileSync(f).length >= 0; } catch { return false; } });
  assert.ok(files.length > 0, 'the node has files');
  for (const f of files) {
    const bytes = readFileSync(f);
    for (const p of plaintexts) assert.equal(bytes.indexOf(Buffer.from(p)), -1, `"${p}" found in ${f}`);
  }
  figures.storeFiles = files.length;
});

await test('the browser shows the same safety number as kith-chat', async () => {
  await alice.page.getByTestId('safety').click();
  const shown = (await alice.page.getByTestId('safety-number').textContent()).trim();
  const { stdout } = await chat(['--profile', carolDir, 'safety-number', 'alice', '--json']);
  const cli = JSON.parse(stdout.trim().split('\n').at(-1));
  assert.equal(shown, cli.safetyNumber);
  assert.match(shown, /^(\d{5} ){11}\d{5}$/);
  await alice.page.getByTestId('safety-back').click();
});

await test('link this browser as a new device of a kith-chat account, then chat from both', async () => {
  const cli = spawn(join(binDir, 'kith-chat'), ['--server', base, '--profile', carolDir, 'link', '--wait', '60'], {
    env: { ...process.env, KITH_PASSWORD: PASSWORD, KITH_PASSPHRASE: 'cli passphrase' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let cliOut = '';
  cli.stdout.on('data', (d) => (cliOut += d));
  cli.stderr.on('data', (d) => (cliOut += d));
  const exited = new Promise((res) => cli.on('exit', res));
  try {
    const code = await until('kith-chat to show a link code', async () => cliOut.match(/kith-chat link accept (\S+)/)?.[1]);
    const context = await browser.newContext({ viewport: { width: 1000, height: 700 } });
    const page = await context.newPage();
    page.setDefaultTimeout(DEADLINE_MS);
    await page.goto(base);
    const form = page.getByTestId('link');
    await form.getByTestId('code').fill(code);
    await form.getByTestId('password').fill(PASSWORD);
    await form.getByTestId('passphrase').fill(PASSPHRASE);
    await form.getByTestId('link-submit').click();
    await page.getByTestId('me').filter({ hasText: 'carol@kith.test' }).waitFor();
    assert.equal(await exited, 0, `kith-chat link: ${cliOut}`);
    assert.match(cliOut, /linked device \d+ to carol@kith\.test/);
    const carolWeb = { name: 'carol (browser)', page, context, errors: [] };
    await until('carol online in the browser', async () => (await page.getByTestId('connection').textContent()) === 'online');
    await openChat(carolWeb, alice.id);
    await send(carolWeb, 'carol now writes from a browser too');
    await openChat(alice, 'carol@kith.test');
    await waitForTexts(alice, ['carol now writes from a browser too']);
    // Carol closes the conversation in the browser: reading it there would clear the message
    // from every queue of her account (docs/api.md), before kith-chat fetched it.
    await carolWeb.page.getByTestId('close').click();
    await send(alice, 'alice answers both of carol’s devices');
    const item = carolWeb.page.locator(`[data-testid=conversation][data-peer="${alice.id}"]`);
    await item.getByTestId('unread').filter({ hasText: '1' }).waitFor();
    const { stdout } = await chat(['--profile', carolDir, 'history', 'alice']);
    await openChat(carolWeb, alice.id);
    await waitForTexts(carolWeb, ['alice answers both of carol’s devices']);
    assert.match(stdout, /alice@kith\.test -> carol@kith\.test: alice answers both of carol’s devices/);
    assert.match(stdout, /carol@kith\.test -> alice@kith\.test: carol now writes from a browser too/);
    // Same account, same identity: the safety number did not change.
    await carolWeb.page.getByTestId('safety').click();
    const fromLinked = (await carolWeb.page.getByTestId('safety-number').textContent()).trim();
    const cliNumber = JSON.parse((await chat(['--profile', carolDir, 'safety-number', 'alice', '--json'])).stdout.trim().split('\n').at(-1)).safetyNumber;
    assert.equal(fromLinked, cliNumber);
    await context.close();
  } finally {
    cli.kill();
  }
});

await test('the browser shows a link code; kith-chat joins the account with it; both devices read', async () => {
  const laptop = mkdtempSync(join(tmpdir(), 'kith-web-e2e-alice-cli-'));
  try {
    await alice.page.getByTestId('link-device').click();
    const shown = (await alice.page.getByTestId('link-code').textContent()).trim();
    const code = shown.replace('kith-chat link accept ', '');
    assert.match(code, /^alice@kith\.test\/([0-9a-f]{4}-){7}[0-9a-f]{4}$/);
    const { stdout } = await chat(['--profile', laptop, 'link', 'accept', code], { KITH_PASSPHRASE: 'laptop passphrase' });
    assert.match(stdout, /linked: this is device \d+ of alice@kith\.test/);
    await alice.page.getByTestId('link-status').filter({ hasText: 'Linked device' }).waitFor();
    await alice.page.getByTestId('link-done').click();
    // The new device writes to bob; bob learns of it from its first message and answers both.
    await chat(['--profile', laptop, 'send', 'bob', 'alice, from her new laptop'], { KITH_PASSPHRASE: 'laptop passphrase' });
    await openChat(bob, alice.id);
    await waitForTexts(bob, ['alice, from her new laptop']);
    if (await alice.page.getByTestId('close').count()) await alice.page.getByTestId('close').click();
    await send(bob, 'got it on every device?');
    const item = alice.page.locator(`[data-testid=conversation][data-peer="${bob.id}"]`);
    await item.getByTestId('last').filter({ hasText: 'got it on every device?' }).waitFor();
    const history = await chat(['--profile', laptop, 'history', 'bob'], { KITH_PASSPHRASE: 'laptop passphrase' });
    assert.match(history.stdout, /bob@kith\.test -> alice@kith\.test: got it on every device\?/);
    await openChat(alice, bob.id);
    await waitForTexts(alice, ['alice, from her new laptop', 'got it on every device?']);
  } finally {
    rmSync(laptop, { recursive: true, force: true });
  }
});

await test('a contact that starts over with a new identity is flagged; sending waits until it is accepted', async () => {
  const fresh = mkdtempSync(join(tmpdir(), 'kith-web-e2e-carol2-'));
  try {
    await chat(['--profile', fresh, 'login', 'carol', '--new-identity']);
    await openChat(alice, 'carol@kith.test');
    const before = await texts(alice);
    await alice.page.getByTestId('safety').click();
    await alice.page.getByText('now presents a different identity').waitFor();
    const oldNumber = (await alice.page.getByTestId('safety-number').textContent()).trim();
    await alice.page.getByTestId('safety-back').click();
    await alice.page.getByTestId('identity-changed').waitFor();
    await send(alice, 'this must not be sent yet');
    await alice.page.getByTestId('notice').filter({ hasText: 'identity of carol@kith.test changed' }).waitFor();
    assert.deepEqual(await texts(alice), before, 'nothing was sent');
    await alice.page.getByTestId('safety').click();
    await alice.page.getByTestId('trust').click();
    await until('the new safety number', async () => {
      const n = (await alice.page.getByTestId('safety-number').textContent()).trim();
      return n !== oldNumber && n;
    });
    const shown = (await alice.page.getByTestId('safety-number').textContent()).trim();
    const cli = JSON.parse((await chat(['--profile', fresh, 'safety-number', 'alice', '--json'])).stdout.trim().split('\n').at(-1));
    assert.equal(shown, cli.safetyNumber);
    await alice.page.getByTestId('safety-back').click();
    await send(alice, 'welcome back, carol');
    await until('kith-chat to read it', async () => /welcome back, carol/.test((await chat(['--profile', fresh, 'history', 'alice'])).stdout));
  } finally {
    rmSync(fresh, { recursive: true, force: true });
  }
});

await test('messages that cannot be read, or were not encrypted, are shown as such', async () => {
  const auth = await (await fetch(`${base}/api/v1/register`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'dave', password: PASSWORD }) })).json();
  const post = (message) =>
    fetch(`${base}/api/v1/messages`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${auth.token}` }, body: JSON.stringify({ senderId: 'dave', receiverId: 'alice', message }) });
  assert.equal((await post('plain words from a client that does not encrypt')).status, 201);
  assert.equal((await post(JSON.stringify({ v: 2, kind: 'kith.e2ee', from: { deviceId: 9 }, to: [{ userId: 'bob@kith.test', deviceId: 1, body: 'AgE=' }] }))).status, 201);
  assert.equal((await post(JSON.stringify({ v: 1, kind: 'kith.e2ee', from: { deviceId: 9 }, to: [] }))).status, 201);
  await openChat(alice, 'dave@kith.test');
  await waitForTexts(alice, ['plain words from a client that does not encrypt']);
  await alice.page.getByText('not encrypted', { exact: true }).waitFor();
  const problems = await until('two unreadable messages', async () => {
    const p = await alice.page.getByTestId('problem').allTextContents();
    return p.length === 2 && p;
  });
  assert.match(problems[0], /could not be read: not encrypted for this device/);
  assert.match(problems[1], /protocol version 1/);
});

await test('a phone-sized screen shows the conversation; screenshot written', async () => {
  const phone = await browser.newContext({ viewport: { width: 390, height: 760 }, deviceScaleFactor: 2 });
  const page = await phone.newPage();
  page.setDefaultTimeout(DEADLINE_MS);
  // Bob's state lives in his context: take a screenshot of his at phone size instead.
  await bob.page.setViewportSize({ width: 390, height: 760 });
  await bob.page.getByTestId('messages').waitFor();
  assert.ok(await bob.page.getByTestId('composer').isVisible(), 'the composer fits on a phone');
  assert.ok(!(await bob.page.getByTestId('start').isVisible()), 'the list gives way to the open conversation');
  await bob.page.screenshot({ path: join(out, 'conversation.png') });
  await bob.page.setViewportSize({ width: 1000, height: 700 });
  await phone.close();
});

await test('time to first message and decrypt time per message (figures)', async () => {
  // A fresh page: open, unlock (argon2id), first message on screen.
  const page = await bob.context.newPage();
  page.setDefaultTimeout(DEADLINE_MS);
  await bob.page.close();
  const t0 = Date.now();
  await page.goto(base);
  bob.page = page;
  await unlock(bob);
  figures.unlockMs = Date.now() - t0;
  await openChat(bob, alice.id);
  await waitForTexts(bob, ['hello bob']);
  figures.openToFirstMessageMs = Date.now() - t0;
  await openChat(alice, bob.id);
  const t2 = Date.now();
  await send(alice, 'ping');
  await waitForTexts(bob, ['ping']);
  figures.sendToShownMs = Date.now() - t2;
  const burst = Array.from({ length: 30 }, (_, i) => `burst ${i + 1}`);
  for (const t of burst) await send(alice, t);
  await waitForTexts(bob, burst);
  const ms = await bob.page.evaluate(() => performance.getEntriesByName('kith-decrypt').map((e) => e.duration));
  assert.ok(ms.length >= burst.length, `decryptions were measured (${ms.length})`);
  ms.sort((a, b) => a - b);
  figures.decryptCount = ms.length;
  figures.decryptMedianMs = ms[Math.floor(ms.length / 2)];
  figures.decryptP90Ms = ms[Math.floor(ms.length * 0.9)];
});

await test('a long conversation shows its latest 50 messages and loads earlier ones on scroll up', async () => {
  const more = Array.from({ length: 15 }, (_, i) => `more ${i + 1}`);
  for (const t of more) await send(alice, t);
  await waitForTexts(bob, more);
  assert.equal(await bob.page.getByTestId('message').count(), 50, 'the latest 50 are shown');
  assert.ok(!(await texts(bob)).includes('hello bob'), 'the first message is not rendered yet');
  await until('earlier messages after scrolling up', async () => {
    await bob.page.getByTestId('messages').evaluate((el) => el.scrollTo(0, 0));
    return (await texts(bob)).includes('hello bob');
  });
  const all = await texts(bob);
  assert.ok(all.length > 50, `all ${all.length} messages after scrolling up`);
  assert.equal(new Set(all).size, all.length, 'nothing shown twice');
  assert.equal(all.at(-1), 'more 15');
});

await test('no page errors', async () => {
  assert.deepEqual([...alice.errors, ...bob.errors].filter((e) => !/WebSocket|ERR_INTERNET_DISCONNECTED|Failed to load resource/.test(e)), []);
});

writeFileSync(join(out, 'figures.json'), JSON.stringify({ chromium: browser.version(), ...figures }, null, 2) + '\n');
console.log(`web e2e: figures ${JSON.stringify(figures)}`);
await browser.close();
stop();
rmSync(dataDir, { recursive: true, force: true });
rmSync(carolDir, { recursive: true, force: true });
const failed = results.filter((r) => !r.ok);
console.log(`web e2e: ${results.length - failed.length} passed, ${failed.length} failed; screenshot and figures in ${out}`);
process.exit(failed.length ? 1 : 0);
