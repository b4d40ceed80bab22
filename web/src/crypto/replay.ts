// The replay record of accepted first-message setups (docs/crypto.md, The replay record).
import { Reader, VERSION, compare, concat, equal, u32 } from './bytes';
import { CryptoError } from './errors';
import { Kind } from './keys';
import { checkDhPublic } from './primitives';

export const MAX_REPLAY_RECORDS = 50_000;

export interface Setup {
  baseKey: Uint8Array;
  signedPreKeyId: number;
  oneTimePreKeyId: number | null;
}

export function sameSetup(a: Setup, b: Setup): boolean {
  return equal(a.baseKey, b.baseKey) && a.signedPreKeyId === b.signedPreKeyId && a.oneTimePreKeyId === b.oneTimePreKeyId;
}

interface Entry {
  id: number;
  baseKey: Uint8Array;
}

const order = (a: Entry, b: Entry) => (a.id !== b.id ? (a.id < b.id ? -1 : 1) : compare(a.baseKey, b.baseKey));

export class ReplayRecord {
  private entries: Entry[] = [];

  get length(): number {
    return this.entries.length;
  }

  has(setup: Setup): boolean {
    return this.entries.some((e) => e.id === setup.signedPreKeyId && equal(e.baseKey, setup.baseKey));
  }

  /** Fails for a setup already accepted, or when the record is full. */
  check(setup: Setup): void {
    if (this.has(setup)) throw new CryptoError('ReplayedFirstMessage', 'this first message was accepted before (a replay)');
    if (this.entries.length >= MAX_REPLAY_RECORDS) throw new CryptoError('ReplayRecordFull', 'the replay record is full');
  }

  insert(setup: Setup): void {
    if (this.has(setup)) return;
    this.entries.push({ id: setup.signedPreKeyId, baseKey: setup.baseKey });
    this.entries.sort(order);
  }

  /** Keeps only the entries of the signed prekeys still held. */
  retainSignedPreKeys(ids: number[]): void {
    this.entries = this.entries.filter((e) => ids.includes(e.id));
  }

  toBytes(): Uint8Array {
    return concat(new Uint8Array([VERSION, Kind.REPLAY_RECORD]), u32(this.entries.length), ...this.entries.map((e) => concat(u32(e.id), e.baseKey)));
  }

  static fromBytes(b: Uint8Array): ReplayRecord {
    const r = new Reader(b, 'replay record');
    r.header(Kind.REPLAY_RECORD);
    const n = r.u32();
    if (n > MAX_REPLAY_RECORDS) throw new CryptoError('TooManyEntries', `replay record: ${n} entries`);
    const out = new ReplayRecord();
    for (let i = 0; i < n; i++) {
      const e = { id: r.u32(), baseKey: checkDhPublic(r.take(32), 'base key') };
      const last = out.entries[out.entries.length - 1];
      if (last && order(last, e) >= 0) throw new CryptoError('InconsistentState', 'replay record entries not strictly increasing');
      out.entries.push(e);
    }
    r.finish();
    return out;
  }
}
