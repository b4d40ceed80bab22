// Every known-answer vector kith-crypto publishes (crypto/tests/data/kat.json), reproduced by
// this implementation with the same deterministic randomness, field by field.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  DeviceCertificate,
  DeviceIdentity,
  DeviceRemoval,
  OneTimePreKey,
  PreKeyBundle,
  PublicIdentity,
  ReplayRecord,
  Session,
  SignedPreKey,
  UserIdentity,
  UserIdentityPublic,
  concat,
  dh,
  generateLinkSecret,
  hex,
  kdfCk,
  kdfRk,
  linkCodeText,
  linkId,
  messageKeys,
  newLinkRequest,
  newLinkResponse,
  openLinkRequest,
  openLinkResponse,
  parseLinkCode,
  safetyNumber,
  sha256,
  u64,
  unhex,
  utf8,
  x3dh,
  hkdf,
  ZERO32,
  Rng,
} from '../src/crypto';

const kat = JSON.parse(readFileSync(new URL('../../crypto/tests/data/kat.json', import.meta.url), 'utf8'));
const T0 = 1_800_000_000_000;
const T1 = T0 + 7 * 24 * 3600 * 1000 + 1;
const ALICE = 'alice@example.org';
const BOB = 'bob@example.org';

const draw = (i: number) => sha256(concat(utf8('kith-kat-v2'), u64(i)));
function testRng(): Rng {
  let i = 0;
  return () => draw(i++);
}
const text = (b: Uint8Array) => new TextDecoder().decode(b);

describe('known-answer vectors (kat.json)', () => {
  it('draws', () => {
    expect(kat.draws).toEqual(Array.from({ length: 20 }, (_, i) => hex(draw(i))));
  });

  it('reproduces every key, certificate, message, session, link message and safety number', () => {
    const rng = testRng();
    const aliceUser = UserIdentity.generate(rng);
    const bobUser = UserIdentity.generate(rng);
    const alice = DeviceIdentity.generate(rng);
    const bob = DeviceIdentity.generate(rng);
    const aliceCert = aliceUser.certify(ALICE, 1, alice.public);
    const bobCert = bobUser.certify(BOB, 2, bob.public);
    const spk = SignedPreKey.generate(1, bob, rng);
    const otpks = OneTimePreKey.generateBatch(100, 2, rng);
    const bundle = new PreKeyBundle(bob.public, spk.public, otpks[0].public);
    const verified = bundle.verify(bobCert, bobUser.public, BOB, 2);
    const a = Session.initiate(alice, aliceCert, verified, rng);
    const P = kat.messages.map((m: { plaintext: string }) => m.plaintext);
    const m0 = a.encrypt(utf8(P[0]), rng);
    const m1 = a.encrypt(utf8(P[1]), rng);
    const replays = new ReplayRecord();
    const { session: b, decrypted: p0 } = Session.respond(bob, bobCert, spk, otpks[0], replays, m0, T0);
    expect(text(p0.plaintext)).toBe(P[0]);
    expect(text(b.decrypt(m1, T0).plaintext)).toBe(P[1]);
    const m2 = b.encrypt(utf8(P[2]), rng);
    const m3 = b.encrypt(utf8(P[3]), rng);
    expect(text(a.decrypt(m3, T0).plaintext)).toBe(P[3]);
    expect(text(a.decrypt(m2, T0).plaintext)).toBe(P[2]);
    const m4 = a.encrypt(utf8(P[4]), rng);
    expect(text(b.decrypt(m4, T0).plaintext)).toBe(P[4]);
    const bundle2 = new PreKeyBundle(bob.public, spk.public, null);
    const a2 = Session.initiate(alice, aliceCert, bundle2.verify(bobCert, bobUser.public, BOB, 2), rng);
    const m5 = a2.encrypt(utf8(P[5]), rng);
    const { session: b2, decrypted: p5 } = Session.respond(bob, bobCert, spk, null, replays, m5, T0);
    expect(text(p5.plaintext)).toBe(P[5]);
    // A replayed first message is refused, and changes nothing.
    const before = hex(replays.toBytes());
    expect(() => Session.respond(bob, bobCert, spk, null, replays, m5, T0)).toThrow(/accepted before/);
    expect(hex(replays.toBytes())).toBe(before);

    const wires = [m0, m1, m2, m3, m4, m5];
    kat.messages.forEach((m: { wire: string }, i: number) => expect(hex(wires[i]), `message ${i}`).toBe(m.wire));

    expect(hex(aliceUser.toBytes())).toBe(kat.alice.user_identity);
    expect(hex(aliceUser.public.toBytes())).toBe(kat.alice.user_identity_public);
    expect(hex(alice.toBytes())).toBe(kat.alice.device_identity);
    expect(hex(alice.public.toBytes())).toBe(kat.alice.public_identity);
    expect(hex(aliceCert.toBytes())).toBe(kat.alice.device_certificate);
    expect(hex(bobUser.toBytes())).toBe(kat.bob.user_identity);
    expect(hex(bobUser.public.toBytes())).toBe(kat.bob.user_identity_public);
    expect(hex(bob.toBytes())).toBe(kat.bob.device_identity);
    expect(hex(bob.public.toBytes())).toBe(kat.bob.public_identity);
    expect(hex(bobCert.toBytes())).toBe(kat.bob.device_certificate);
    expect(hex(spk.toBytes())).toBe(kat.bob.signed_prekey);
    expect(hex(spk.public.toBytes())).toBe(kat.bob.signed_prekey_public);
    expect(otpks.map((k) => hex(k.toBytes()))).toEqual(kat.bob.one_time_prekeys);
    expect(otpks.map((k) => hex(k.public.toBytes()))).toEqual(kat.bob.one_time_prekeys_public);
    expect(hex(replays.toBytes())).toBe(kat.bob.replay_record);
    expect(hex(bundle.toBytes())).toBe(kat.bundle_with_one_time_prekey);
    expect(hex(bundle2.toBytes())).toBe(kat.bundle_without_one_time_prekey);
    expect(hex(a.toBytes())).toBe(kat.final_sessions.alice_first);
    expect(hex(b.toBytes())).toBe(kat.final_sessions.bob_first);
    expect(hex(a2.toBytes())).toBe(kat.final_sessions.alice_second);
    expect(hex(b2.toBytes())).toBe(kat.final_sessions.bob_second);
    expect(safetyNumber(aliceUser.public, ALICE, bobUser.public, BOB)).toBe(kat.safety_number);
    expect(safetyNumber(bobUser.public, BOB, aliceUser.public, ALICE)).toBe(kat.safety_number);

    // Linking Alice's laptop.
    const secret = generateLinkSecret(rng);
    const codeText = linkCodeText({ userId: ALICE, secret });
    expect(codeText).toBe(kat.link.code);
    const laptop = DeviceIdentity.generate(rng);
    const request = newLinkRequest(parseLinkCode(codeText.toUpperCase().replace('ALICE@EXAMPLE.ORG', ALICE)), 3, laptop, rng);
    const opened = openLinkRequest(secret, request.bytes);
    expect([opened.userId, opened.deviceId]).toEqual([ALICE, 3]);
    const response = newLinkResponse(secret, opened, aliceUser, rng);
    const linked = openLinkResponse(secret, request, response);
    expect(linked.userIdentity.public.equals(aliceUser.public)).toBe(true);
    const removal = aliceUser.remove(ALICE, 3, laptop.public);
    expect(hex(laptop.toBytes())).toBe(kat.link.laptop_device_identity);
    expect(hex(linkId(secret))).toBe(kat.link.link_id);
    expect(hex(request.bytes)).toBe(kat.link.request);
    expect(hex(response)).toBe(kat.link.response);
    expect(hex(linked.certificate.toBytes())).toBe(kat.link.laptop_certificate);
    expect(hex(removal.toBytes())).toBe(kat.link.laptop_removal);
    expect(DeviceRemoval.fromBytes(removal.toBytes()).revokes(linked.certificate)).toBe(true);
    // A request made without the code does not authenticate.
    expect(() => openLinkRequest(new Uint8Array(16), request.bytes)).toThrow();

    // Skipped keys: counters 1, 2, 3 of Alice's second chain, Bob gets 3.
    const more = [0, 1, 2].map((i) => a.encrypt(utf8(`more ${i}`), rng));
    b.decrypt(more[2], T0);
    expect(hex(b.toBytes())).toBe(kat.skipped_keys.bob_first_with_two_skipped);
    const withheld = Array.from({ length: kat.skipped_keys.withheld }, () => a.encrypt(utf8('withheld'), rng));
    const arrived = a.encrypt(utf8('after the gap'), rng);
    const afterGap = b.decrypt(arrived, T0);
    expect(afterGap.lost).toBe(kat.skipped_keys.lost_when_the_next_arrives);
    expect(b.skippedKeyCount).toBe(kat.skipped_keys.kept);
    expect(hex(sha256(b.toBytes()))).toBe(kat.skipped_keys.bob_first_after_the_gap_sha256);
    const snapshot = b.toBytes();
    const decrypts = (i: number) => {
      try {
        Session.fromBytes(snapshot).decrypt(withheld[i], T0);
        return true;
      } catch {
        return false;
      }
    };
    const oldest = kat.skipped_keys.oldest_kept_withheld_index;
    expect(decrypts(oldest)).toBe(true);
    expect(decrypts(oldest - 1)).toBe(false);
    const late = a.encrypt(utf8('a week later'), rng);
    const afterWeek = b.decrypt(late, T1);
    expect(afterWeek.lost).toBe(kat.skipped_keys.lost_a_week_later);
    expect(b.skippedKeyCount).toBe(kat.skipped_keys.kept_a_week_later);
  });

  it('reproduces the derived key schedule from the specification', () => {
    const d = kat.derived;
    const alice = new DeviceIdentity(draw(2), draw(3));
    const bob = new DeviceIdentity(draw(4), draw(5));
    const aliceCert = new UserIdentity(draw(0)).certify(ALICE, 1, alice.public);
    const bobCert = new UserIdentity(draw(1)).certify(BOB, 2, bob.public);
    expect(hex(concat(aliceCert.party(), bobCert.party()))).toBe(d.associated_data);
    const spkPub = new SignedPreKey(1, draw(6), new Uint8Array(64)).public.key;
    const otpkPub = new OneTimePreKey(100, draw(7)).public.key;
    const f = d.first_session;
    const dhs = [dh(alice.dhSecret, spkPub, '1'), dh(draw(9), bob.public.dhKey, '2'), dh(draw(9), spkPub, '3'), dh(draw(9), otpkPub, '4')];
    expect(dhs.map(hex)).toEqual([f.dh1, f.dh2, f.dh3, f.dh4]);
    const sk = x3dh(dhs);
    expect(hex(sk)).toBe(f.x3dh_secret);
    const [rk1, ckA1] = kdfRk(sk, dh(draw(10), spkPub, 'r'));
    expect([hex(rk1), hex(ckA1)]).toEqual([f.root_key_1, f.alice_chain_key_1]);
    const [mk0, c1] = kdfCk(ckA1);
    const [mk1] = kdfCk(c1);
    expect([hex(mk0), hex(mk1)]).toEqual(f.message_keys_alice_1);
    expect(hex(messageKeys(mk0)).length).toBe(88);
    const a1Pub = new OneTimePreKey(0, draw(10)).public.key;
    const [rk2, ckB1] = kdfRk(rk1, dh(draw(11), a1Pub, 'r'));
    expect([hex(rk2), hex(ckB1)]).toEqual([f.root_key_2, f.bob_chain_key_1]);
    const b1Pub = new OneTimePreKey(0, draw(11)).public.key;
    const [rk3, ckA2] = kdfRk(rk2, dh(draw(12), b1Pub, 'r'));
    expect([hex(rk3), hex(ckA2)]).toEqual([f.root_key_3, f.alice_chain_key_2]);
    const keys: string[] = [];
    let ck = ckA2;
    for (let i = 0; i < 3; i++) {
      const [mk, next] = kdfCk(ck);
      keys.push(hex(mk));
      ck = next;
    }
    expect(keys).toEqual(f.message_keys_alice_2);
    const s = d.second_session;
    const sk2 = x3dh([dhs[0], dh(draw(13), bob.public.dhKey, '2'), dh(draw(13), spkPub, '3')]);
    expect(hex(sk2)).toBe(s.x3dh_secret);
    const [rkS, ckS] = kdfRk(sk2, dh(draw(14), spkPub, 'r'));
    expect([hex(rkS), hex(ckS)]).toEqual([s.root_key_1, s.alice_chain_key_1]);
    expect([hex(kdfCk(ckS)[0])]).toEqual(s.message_keys_alice_1);
    const secret = draw(15).slice(0, 16);
    const eLaptopPub = new OneTimePreKey(0, draw(18)).public.key;
    expect(hex(hkdf(ZERO32, concat(secret, eLaptopPub), 'kith-link-request-v2', 44))).toBe(d.link.request_key_and_nonce);
    const shared = dh(draw(19), eLaptopPub, 'link');
    expect(hex(shared)).toBe(d.link.shared_secret);
    expect(hex(hkdf(secret, shared, 'kith-link-response-v2', 44))).toBe(d.link.response_key_and_nonce);
  });

  it('decodes every stored encoding and re-encodes it byte for byte', () => {
    const same = (b: string, dec: (x: Uint8Array) => { toBytes(): Uint8Array }) => expect(hex(dec(unhex(b)).toBytes())).toBe(b);
    same(kat.alice.public_identity, PublicIdentity.fromBytes);
    same(kat.alice.device_identity, DeviceIdentity.fromBytes);
    same(kat.alice.device_certificate, DeviceCertificate.fromBytes);
    same(kat.alice.user_identity_public, UserIdentityPublic.fromBytes);
    same(kat.bob.signed_prekey, SignedPreKey.fromBytes);
    same(kat.bob.one_time_prekeys[1], OneTimePreKey.fromBytes);
    same(kat.bob.replay_record, ReplayRecord.fromBytes);
    same(kat.bundle_with_one_time_prekey, PreKeyBundle.fromBytes);
    same(kat.bundle_without_one_time_prekey, PreKeyBundle.fromBytes);
    same(kat.link.laptop_removal, DeviceRemoval.fromBytes);
    for (const s of Object.values(kat.final_sessions) as string[]) same(s, Session.fromBytes);
    same(kat.skipped_keys.bob_first_with_two_skipped, Session.fromBytes);
    // Stored sessions keep working: one more message each way.
    const alice = Session.fromBytes(unhex(kat.final_sessions.alice_first));
    const bob = Session.fromBytes(unhex(kat.final_sessions.bob_first));
    const rng = testRng();
    expect(text(alice.decrypt(bob.encrypt(utf8('after reload'), rng), T0).plaintext)).toBe('after reload');
    expect(text(bob.decrypt(alice.encrypt(utf8('and back'), rng), T0).plaintext)).toBe('and back');
  });

  it('refuses version 1, tampering and replays without changing state', () => {
    const alice = Session.fromBytes(unhex(kat.final_sessions.alice_first));
    const bob = Session.fromBytes(unhex(kat.final_sessions.bob_first));
    const wire = alice.encrypt(utf8('fresh'), testRng());
    const before = hex(bob.toBytes());
    const v1 = wire.slice();
    v1[0] = 1;
    expect(() => bob.decrypt(v1, T0)).toThrow(/version 1/);
    const tampered = wire.slice();
    tampered[tampered.length - 1] ^= 1;
    expect(() => bob.decrypt(tampered, T0)).toThrow(/does not authenticate/);
    expect(() => bob.decrypt(unhex(kat.messages[4].wire), T0)).toThrow(/already received/);
    expect(hex(bob.toBytes())).toBe(before);
    expect(text(bob.decrypt(wire, T0).plaintext)).toBe('fresh');
    expect(() => bob.decrypt(wire, T0)).toThrow(/already received/);
  });
});
