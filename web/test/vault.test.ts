// The browser's state at rest: sealed under the passphrase key, named records, wrong passphrases told apart.
import { describe, expect, it } from 'vitest';
import { Vault, WrongPassphrase } from '../src/app/vault';

describe('vault', () => {
  it('seals records that only the right passphrase and the right name open', async () => {
    const { vault, keyFile } = await Vault.create('correct passphrase');
    expect(keyFile).toMatchObject({ kdf: 'argon2id', m: 19456, t: 2, p: 1 });
    const sealed = vault.sealJson('kith-web-state-v2', { secret: 'the plaintext' });
    expect(sealed).not.toContain('plaintext');
    const reopened = await Vault.open('correct passphrase', keyFile);
    expect(reopened.openJson('kith-web-state-v2', sealed)).toEqual({ secret: 'the plaintext' });
    // Another record's name does not open it (associated data), nor does tampering.
    expect(reopened.open('kith-web-history-v2:bob@x', sealed)).toBeNull();
    const bytes = atob(sealed);
    const tampered = btoa(bytes.slice(0, -1) + String.fromCharCode(bytes.charCodeAt(bytes.length - 1) ^ 1));
    expect(reopened.open('kith-web-state-v2', tampered)).toBeNull();
    await expect(Vault.open('wrong passphrase', keyFile)).rejects.toBeInstanceOf(WrongPassphrase);
  }, 60_000);
});
