// State at rest: everything is sealed with a key derived from the passphrase, as kith-chat's
// profile is (docs/crypto.md, Client state at rest): argon2id (v0x13, 19,456 KiB, 2 passes,
// 1 lane, 16-byte salt, 32-byte key), then XChaCha20-Poly1305 with a random 24-byte nonce and
// associated data naming the record. A check value tells a wrong passphrase from damage.
import { argon2idAsync } from '@noble/hashes/argon2.js';
import { xchacha20poly1305 } from '@noble/ciphers/chacha.js';
import { concat, fromBase64, fromUtf8, toBase64, utf8 } from '../crypto';

export const KDF = { m: 19456, t: 2, p: 1, dkLen: 32, version: 0x13 } as const;
const CHECK = 'kith-profile-key-check';

export interface KeyFile {
  kdf: 'argon2id';
  m: number;
  t: number;
  p: number;
  salt: string;
  check: string;
}

export class WrongPassphrase extends Error {
  constructor() {
    super('wrong passphrase');
  }
}

export class Vault {
  private constructor(private readonly key: Uint8Array) {}

  static async create(passphrase: string): Promise<{ vault: Vault; keyFile: KeyFile }> {
    const salt = crypto.getRandomValues(new Uint8Array(16));
    const key = await derive(passphrase, salt);
    const vault = new Vault(key);
    return { vault, keyFile: { kdf: 'argon2id', m: KDF.m, t: KDF.t, p: KDF.p, salt: toBase64(salt), check: vault.seal('kith-profile-key-check', utf8(CHECK)) } };
  }

  static async open(passphrase: string, keyFile: KeyFile): Promise<Vault> {
    const vault = new Vault(await derive(passphrase, fromBase64(keyFile.salt), keyFile));
    const check = vault.open('kith-profile-key-check', keyFile.check);
    if (check === null || fromUtf8(check) !== CHECK) throw new WrongPassphrase();
    return vault;
  }

  seal(name: string, plaintext: Uint8Array): string {
    const nonce = crypto.getRandomValues(new Uint8Array(24));
    return toBase64(concat(nonce, xchacha20poly1305(this.key, nonce, utf8(name)).encrypt(plaintext)));
  }

  open(name: string, sealed: string): Uint8Array | null {
    try {
      const b = fromBase64(sealed);
      return xchacha20poly1305(this.key, b.subarray(0, 24), utf8(name)).decrypt(b.subarray(24));
    } catch {
      return null;
    }
  }

  sealJson(name: string, value: unknown): string {
    return this.seal(name, utf8(JSON.stringify(value)));
  }

  openJson<T>(name: string, sealed: string): T {
    const b = this.open(name, sealed);
    if (b === null) throw new Error(`the stored ${name} is damaged (it does not authenticate)`);
    return JSON.parse(fromUtf8(b)) as T;
  }
}

function derive(passphrase: string, salt: Uint8Array, p: { m: number; t: number; p: number } = KDF): Promise<Uint8Array> {
  return argon2idAsync(utf8(passphrase), salt, { m: p.m, t: p.t, p: p.p, dkLen: 32, version: KDF.version });
}
