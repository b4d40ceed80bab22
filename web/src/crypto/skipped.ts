// The skipped-key store (docs/crypto.md, The skipped-key store): insertion order, evicting and expiring.
import { Reader, concat, hex, u32, u64 } from './bytes';
import { CryptoError } from './errors';
import { checkDhPublic } from './primitives';

export const MAX_SKIPPED_KEYS = 2000;
export const MAX_SKIPPED_KEYS_PER_CHAIN = 1000;
export const SKIPPED_KEY_MAX_AGE_MS = 7 * 24 * 60 * 60 * 1000;

export interface SkippedEntry {
  ratchetKey: Uint8Array;
  counter: number;
  storedAt: number;
  key: Uint8Array;
}

export interface NewKey {
  ratchetKey: Uint8Array;
  counter: number;
  key: Uint8Array;
}

const expired = (e: SkippedEntry, now: number) => now - e.storedAt > SKIPPED_KEY_MAX_AGE_MS;

export class SkippedKeys {
  constructor(public entries: SkippedEntry[] = []) {}

  clone(): SkippedKeys {
    return new SkippedKeys([...this.entries]);
  }

  get length(): number {
    return this.entries.length;
  }

  find(ratchetKey: Uint8Array, counter: number, now: number): number {
    const k = hex(ratchetKey);
    return this.entries.findIndex((e) => e.counter === counter && hex(e.ratchetKey) === k && !expired(e, now));
  }

  remove(index: number): void {
    this.entries.splice(index, 1);
  }

  /** Appends `fresh`, evicts per chain then per session, expires; returns how many keys were dropped. */
  insert(fresh: NewKey[], droppedBefore: number, now: number): number {
    const last = this.entries[this.entries.length - 1];
    const stamp = last ? Math.max(last.storedAt, now) : now;
    let dropped = droppedBefore;
    const perChain = new Map<string, number>();
    for (const e of this.entries) perChain.set(hex(e.ratchetKey), (perChain.get(hex(e.ratchetKey)) ?? 0) + 1);
    for (const e of fresh) perChain.set(hex(e.ratchetKey), (perChain.get(hex(e.ratchetKey)) ?? 0) + 1);
    const excess = new Map<string, number>();
    for (const [k, n] of perChain) if (n > MAX_SKIPPED_KEYS_PER_CHAIN) excess.set(k, n - MAX_SKIPPED_KEYS_PER_CHAIN);
    const take = (key: Uint8Array) => {
      const k = hex(key);
      const n = excess.get(k) ?? 0;
      if (n > 0) {
        excess.set(k, n - 1);
        return true;
      }
      return false;
    };
    const before = this.entries.length;
    this.entries = this.entries.filter((e) => !take(e.ratchetKey));
    dropped += before - this.entries.length;
    for (const e of fresh) {
      if (take(e.ratchetKey)) dropped += 1;
      else this.entries.push({ ratchetKey: e.ratchetKey, counter: e.counter, storedAt: stamp, key: e.key });
    }
    while (this.entries.length > MAX_SKIPPED_KEYS) {
      this.entries.shift();
      dropped += 1;
    }
    return dropped + this.expire(now);
  }

  expire(now: number): number {
    const before = this.entries.length;
    this.entries = this.entries.filter((e) => !expired(e, now));
    return before - this.entries.length;
  }

  write(): Uint8Array {
    return concat(u32(this.entries.length), ...this.entries.map((e) => concat(e.ratchetKey, u32(e.counter), u64(e.storedAt), e.key)));
  }

  static read(r: Reader): SkippedKeys {
    const count = r.u32();
    if (count > MAX_SKIPPED_KEYS) throw new CryptoError('TooManyEntries', `skipped-key store: ${count} entries, at most ${MAX_SKIPPED_KEYS}`);
    const entries: SkippedEntry[] = [];
    const seen = new Set<string>();
    const perChain = new Map<string, number>();
    for (let i = 0; i < count; i++) {
      const ratchetKey = checkDhPublic(r.take(32), 'skipped ratchet key');
      const counter = r.u32();
      const storedAt = r.u64();
      const key = r.take(32);
      const last = entries[entries.length - 1];
      if (last && last.storedAt > storedAt) throw new CryptoError('InconsistentState', 'skipped keys not in insertion order');
      const id = `${hex(ratchetKey)}:${counter}`;
      if (seen.has(id)) throw new CryptoError('InconsistentState', 'the same skipped key twice');
      seen.add(id);
      const n = (perChain.get(hex(ratchetKey)) ?? 0) + 1;
      perChain.set(hex(ratchetKey), n);
      if (n > MAX_SKIPPED_KEYS_PER_CHAIN) throw new CryptoError('InconsistentState', 'more skipped keys for one chain than allowed');
      entries.push({ ratchetKey, counter, storedAt, key });
    }
    return new SkippedKeys(entries);
  }
}
