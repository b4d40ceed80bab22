// The published primitive vectors kith-crypto ships (crypto/tests/data/wycheproof), run through
// the primitives this client uses, with the same expectations as crypto/tests/vectors.rs.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { aead, equal, unhex, verifyStrict, x25519Raw, ZERO32 } from '../src/crypto';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = any;
const load = (name: string): Json => JSON.parse(readFileSync(new URL(`../../crypto/tests/data/wycheproof/${name}`, import.meta.url), 'utf8'));
function tests(file: Json): [Json, Json][] {
  const all: [Json, Json][] = file.testGroups.flatMap((g: Json) => g.tests.map((t: Json) => [g, t]));
  expect(all.length).toBe(file.numberOfTests);
  return all;
}

describe('wycheproof', () => {
  it('x25519: every shared secret, and all-zero results refused', () => {
    let valid = 0, acceptable = 0, zero = 0;
    for (const [, t] of tests(load('x25519_test.json'))) {
      const shared = unhex(t.shared);
      const got = x25519Raw(unhex(t.private), unhex(t.public));
      if (equal(shared, ZERO32)) {
        expect(got, `tcId ${t.tcId}`).toBeNull();
        zero++;
      } else {
        expect(got && equal(got, shared), `tcId ${t.tcId}`).toBe(true);
      }
      if (t.result === 'valid') valid++;
      else if (t.result === 'acceptable') acceptable++;
    }
    expect([valid, acceptable]).toEqual([264, 254]);
    expect(zero).toBeGreaterThan(0);
  });

  it('chacha20-poly1305: valid vectors open and seal, invalid ones are rejected', () => {
    let valid = 0, invalid = 0;
    for (const [, t] of tests(load('chacha20_poly1305_test.json'))) {
      const iv = unhex(t.iv);
      if (iv.length !== 12) {
        expect(t.result).toBe('invalid');
        invalid++;
        continue;
      }
      const sealed = new Uint8Array([...unhex(t.ct), ...unhex(t.tag)]);
      let opened: Uint8Array | null;
      try {
        opened = aead(unhex(t.key), iv, unhex(t.aad)).decrypt(sealed);
      } catch {
        opened = null;
      }
      if (t.result === 'valid') {
        expect(opened && equal(opened, unhex(t.msg)), `tcId ${t.tcId}`).toBe(true);
        expect(equal(aead(unhex(t.key), iv, unhex(t.aad)).encrypt(unhex(t.msg)), sealed)).toBe(true);
        valid++;
      } else {
        expect(opened, `tcId ${t.tcId}`).toBeNull();
        invalid++;
      }
    }
    expect([valid, invalid]).toEqual([256, 69]);
  });

  it('ed25519: strict verification accepts exactly the valid signatures', () => {
    let valid = 0, invalid = 0;
    for (const [g, t] of tests(load('ed25519_test.json'))) {
      const ok = verifyStrict(unhex(g.publicKey.pk), unhex(t.msg), unhex(t.sig));
      expect(ok, `tcId ${t.tcId}`).toBe(t.result === 'valid');
      if (t.result === 'valid') valid++;
      else invalid++;
    }
    expect([valid, invalid]).toEqual([88, 63]);
  });
});
