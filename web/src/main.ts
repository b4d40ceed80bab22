// Entry point: one tab at a time holds the session (Web Locks); errors are shown, never a blank page.
import { App } from './app/ui';
import { Db } from './app/db';
import { inWords } from './app/api';
import './style.css';

const root = document.getElementById('app')!;

function fatal(e: unknown): void {
  root.replaceChildren();
  const p = document.createElement('p');
  p.className = 'error';
  p.setAttribute('role', 'alert');
  p.textContent = `Something went wrong: ${inWords(e)} Reload the page to try again.`;
  root.append(p);
}

addEventListener('error', (ev) => fatal(ev.error ?? ev.message));
addEventListener('unhandledrejection', (ev) => console.warn('unhandled', ev.reason));

async function main(): Promise<void> {
  if (!('locks' in navigator) || !('indexedDB' in window)) {
    fatal(new Error('this browser lacks IndexedDB or Web Locks, which kith needs'));
    return;
  }
  const run = async () => {
    const db = await Db.open();
    await new App(root, db).welcome();
    // Hold the lock for as long as this tab lives.
    await new Promise(() => {});
  };
  await navigator.locks.request('kith-session', { ifAvailable: true }, async (lock) => {
    if (lock) return run();
    const p = document.createElement('p');
    p.className = 'notice';
    p.setAttribute('data-testid', 'other-tab');
    p.textContent = 'kith is open in another tab of this browser. Use that tab; this one takes over when it is closed.';
    root.replaceChildren(p);
    // Wait for the other tab to let go, then start here.
    await navigator.locks.request('kith-session', run);
  });
}

main().catch(fatal);
