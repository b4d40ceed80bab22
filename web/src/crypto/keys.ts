// Device keys, user identities, certificates, removals and prekey bundles (docs/crypto.md, Keys).
import { Reader, VERSION, concat, equal, optU32, str16, u32, utf8 } from './bytes';
import { CryptoError } from './errors';
import { Rng, checkDhPublic, checkSigningKey, edPublic, sign, verifyStrict, xPublic } from './primitives';

export const Kind = {
  MESSAGE: 0x01,
  PREKEY_MESSAGE: 0x02,
  PUBLIC_IDENTITY: 0x10,
  DEVICE_IDENTITY: 0x11,
  SIGNED_PREKEY: 0x12,
  SIGNED_PREKEY_PUBLIC: 0x13,
  ONE_TIME_PREKEY: 0x14,
  ONE_TIME_PREKEY_PUBLIC: 0x15,
  PREKEY_BUNDLE: 0x16,
  SESSION: 0x20,
  REPLAY_RECORD: 0x21,
  USER_IDENTITY: 0x30,
  USER_IDENTITY_PUBLIC: 0x31,
  DEVICE_CERTIFICATE: 0x32,
  DEVICE_REMOVAL: 0x33,
  LINK_REQUEST: 0x34,
  LINK_RESPONSE: 0x35,
} as const;

const head = (kind: number) => new Uint8Array([VERSION, kind]);
const label = (s: string) => concat(utf8(s), new Uint8Array([0]));

function decode<T>(bytes: Uint8Array, what: string, kind: number, body: (r: Reader) => T): T {
  const r = new Reader(bytes, what);
  r.header(kind);
  const v = body(r);
  r.finish();
  return v;
}

/** A device's public identity: Ed25519 signing key, X25519 DH key and the binding signature. */
export class PublicIdentity {
  constructor(
    readonly signingKey: Uint8Array,
    readonly dhKey: Uint8Array,
    readonly binding: Uint8Array,
  ) {}

  static bindingMessage(signingKey: Uint8Array, dhKey: Uint8Array): Uint8Array {
    return concat(label('kith-identity-binding-v1'), signingKey, dhKey);
  }

  static readBody(r: Reader): PublicIdentity {
    const signingKey = checkSigningKey(r.take(32), 'identity signing key');
    const dhKey = checkDhPublic(r.take(32), 'identity DH key');
    const binding = r.take(64);
    if (!verifyStrict(signingKey, PublicIdentity.bindingMessage(signingKey, dhKey), binding))
      throw new CryptoError('BadIdentityBinding', 'the identity binding signature does not verify');
    return new PublicIdentity(signingKey, dhKey, binding);
  }

  body(): Uint8Array {
    return concat(this.signingKey, this.dhKey, this.binding);
  }

  toBytes(): Uint8Array {
    return concat(head(Kind.PUBLIC_IDENTITY), this.body());
  }

  static fromBytes(b: Uint8Array): PublicIdentity {
    return decode(b, 'public identity', Kind.PUBLIC_IDENTITY, PublicIdentity.readBody);
  }

  equals(o: PublicIdentity): boolean {
    return equal(this.signingKey, o.signingKey) && equal(this.dhKey, o.dhKey) && equal(this.binding, o.binding);
  }
}

/** A device's identity secrets: the Ed25519 seed and the X25519 secret. */
export class DeviceIdentity {
  readonly public: PublicIdentity;
  constructor(
    readonly seed: Uint8Array,
    readonly dhSecret: Uint8Array,
  ) {
    const signingKey = edPublic(seed);
    const dhKey = xPublic(dhSecret);
    this.public = new PublicIdentity(signingKey, dhKey, sign(seed, PublicIdentity.bindingMessage(signingKey, dhKey)));
  }

  /** Draws the Ed25519 seed, then the X25519 secret. */
  static generate(rng: Rng): DeviceIdentity {
    const seed = rng();
    return new DeviceIdentity(seed, rng());
  }

  toBytes(): Uint8Array {
    return concat(head(Kind.DEVICE_IDENTITY), this.seed, this.dhSecret);
  }

  static fromBytes(b: Uint8Array): DeviceIdentity {
    return decode(b, 'device identity', Kind.DEVICE_IDENTITY, (r) => new DeviceIdentity(r.take(32), r.take(32)));
  }
}

function signedPreKeyMessage(id: number, key: Uint8Array): Uint8Array {
  return concat(label('kith-signed-prekey-v1'), u32(id), key);
}

export class SignedPreKeyPublic {
  constructor(
    readonly id: number,
    readonly key: Uint8Array,
    readonly signature: Uint8Array,
  ) {}

  static readBody(r: Reader): SignedPreKeyPublic {
    return new SignedPreKeyPublic(r.u32(), checkDhPublic(r.take(32), 'signed prekey'), r.take(64));
  }

  body(): Uint8Array {
    return concat(u32(this.id), this.key, this.signature);
  }

  toBytes(): Uint8Array {
    return concat(head(Kind.SIGNED_PREKEY_PUBLIC), this.body());
  }

  static fromBytes(b: Uint8Array): SignedPreKeyPublic {
    return decode(b, 'signed prekey', Kind.SIGNED_PREKEY_PUBLIC, SignedPreKeyPublic.readBody);
  }

  verify(identity: PublicIdentity): void {
    if (!verifyStrict(identity.signingKey, signedPreKeyMessage(this.id, this.key), this.signature))
      throw new CryptoError('BadSignedPreKeySignature', 'the signed prekey signature does not verify');
  }
}

export class SignedPreKey {
  readonly public: SignedPreKeyPublic;
  constructor(
    readonly id: number,
    readonly secret: Uint8Array,
    signature: Uint8Array,
  ) {
    this.public = new SignedPreKeyPublic(id, xPublic(secret), signature);
  }

  static generate(id: number, identity: DeviceIdentity, rng: Rng): SignedPreKey {
    const secret = rng();
    return new SignedPreKey(id, secret, sign(identity.seed, signedPreKeyMessage(id, xPublic(secret))));
  }

  toBytes(): Uint8Array {
    return concat(head(Kind.SIGNED_PREKEY), u32(this.id), this.secret, this.public.signature);
  }

  static fromBytes(b: Uint8Array): SignedPreKey {
    return decode(b, 'signed prekey secret', Kind.SIGNED_PREKEY, (r) => new SignedPreKey(r.u32(), r.take(32), r.take(64)));
  }
}

export class OneTimePreKeyPublic {
  constructor(
    readonly id: number,
    readonly key: Uint8Array,
  ) {}

  static readBody(r: Reader): OneTimePreKeyPublic {
    return new OneTimePreKeyPublic(r.u32(), checkDhPublic(r.take(32), 'one-time prekey'));
  }

  toBytes(): Uint8Array {
    return concat(head(Kind.ONE_TIME_PREKEY_PUBLIC), u32(this.id), this.key);
  }

  static fromBytes(b: Uint8Array): OneTimePreKeyPublic {
    return decode(b, 'one-time prekey', Kind.ONE_TIME_PREKEY_PUBLIC, OneTimePreKeyPublic.readBody);
  }
}

export class OneTimePreKey {
  readonly public: OneTimePreKeyPublic;
  constructor(
    readonly id: number,
    readonly secret: Uint8Array,
  ) {
    this.public = new OneTimePreKeyPublic(id, xPublic(secret));
  }

  static generateBatch(start: number, n: number, rng: Rng): OneTimePreKey[] {
    if (start + n - 1 > 0xffffffff) throw new CryptoError('IdOverflow', 'one-time prekey ids past u32::MAX');
    const out: OneTimePreKey[] = [];
    for (let i = 0; i < n; i++) out.push(new OneTimePreKey(start + i, rng()));
    return out;
  }

  toBytes(): Uint8Array {
    return concat(head(Kind.ONE_TIME_PREKEY), u32(this.id), this.secret);
  }

  static fromBytes(b: Uint8Array): OneTimePreKey {
    return decode(b, 'one-time prekey secret', Kind.ONE_TIME_PREKEY, (r) => new OneTimePreKey(r.u32(), r.take(32)));
  }
}

/** The public half of an account's user identity. */
export class UserIdentityPublic {
  constructor(readonly key: Uint8Array) {}

  static read(r: Reader): UserIdentityPublic {
    return new UserIdentityPublic(checkSigningKey(r.take(32), 'user identity'));
  }

  toBytes(): Uint8Array {
    return concat(head(Kind.USER_IDENTITY_PUBLIC), this.key);
  }

  static fromBytes(b: Uint8Array): UserIdentityPublic {
    return decode(b, 'user identity', Kind.USER_IDENTITY_PUBLIC, UserIdentityPublic.read);
  }

  equals(o: UserIdentityPublic): boolean {
    return equal(this.key, o.key);
  }
}

function certificateMessage(userKey: Uint8Array, userId: string, deviceId: number, device: PublicIdentity): Uint8Array {
  return concat(label('kith-device-certificate-v2'), userKey, str16(userId), u32(deviceId), device.signingKey, device.dhKey);
}

function removalMessage(userKey: Uint8Array, userId: string, deviceId: number, deviceKey: Uint8Array): Uint8Array {
  return concat(label('kith-device-removal-v2'), userKey, str16(userId), u32(deviceId), deviceKey);
}

/** An account's user identity (secret): certifies its devices and signs their removal. */
export class UserIdentity {
  readonly public: UserIdentityPublic;
  constructor(readonly seed: Uint8Array) {
    this.public = new UserIdentityPublic(edPublic(seed));
  }

  static generate(rng: Rng): UserIdentity {
    return new UserIdentity(rng());
  }

  certify(userId: string, deviceId: number, device: PublicIdentity): DeviceCertificate {
    const sig = sign(this.seed, certificateMessage(this.public.key, userId, deviceId, device));
    return new DeviceCertificate(this.public, userId, deviceId, device, sig);
  }

  remove(userId: string, deviceId: number, device: PublicIdentity): DeviceRemoval {
    const sig = sign(this.seed, removalMessage(this.public.key, userId, deviceId, device.signingKey));
    return new DeviceRemoval(this.public, userId, deviceId, device.signingKey, sig);
  }

  toBytes(): Uint8Array {
    return concat(head(Kind.USER_IDENTITY), this.seed);
  }

  static fromBytes(b: Uint8Array): UserIdentity {
    return decode(b, 'user identity secret', Kind.USER_IDENTITY, (r) => new UserIdentity(r.take(32)));
  }
}

/** "Device `deviceId` of `userId` has identity `device`", signed by the user identity. */
export class DeviceCertificate {
  constructor(
    readonly userKey: UserIdentityPublic,
    readonly userId: string,
    readonly deviceId: number,
    readonly device: PublicIdentity,
    readonly signature: Uint8Array,
  ) {}

  static readBody(r: Reader): DeviceCertificate {
    const userKey = UserIdentityPublic.read(r);
    const userId = r.userId();
    const deviceId = r.u32();
    const device = PublicIdentity.readBody(r);
    const signature = r.take(64);
    if (!verifyStrict(userKey.key, certificateMessage(userKey.key, userId, deviceId, device), signature))
      throw new CryptoError('BadCertificateSignature', 'the device certificate signature does not verify');
    return new DeviceCertificate(userKey, userId, deviceId, device, signature);
  }

  body(): Uint8Array {
    return concat(this.userKey.key, str16(this.userId), u32(this.deviceId), this.device.body(), this.signature);
  }

  /** `party(C)` of the associated data. */
  party(): Uint8Array {
    return concat(this.userKey.key, str16(this.userId), u32(this.deviceId), this.device.signingKey, this.device.dhKey);
  }

  toBytes(): Uint8Array {
    return concat(head(Kind.DEVICE_CERTIFICATE), this.body());
  }

  static fromBytes(b: Uint8Array): DeviceCertificate {
    return decode(b, 'device certificate', Kind.DEVICE_CERTIFICATE, DeviceCertificate.readBody);
  }

  /** Fails unless this certificate is by `trusted` for device `deviceId` of `userId`. */
  check(trusted: UserIdentityPublic, userId: string, deviceId: number): void {
    if (!this.userKey.equals(trusted))
      throw new CryptoError('UntrustedUserIdentity', `the certificate is signed by another identity than the one trusted for ${userId}`);
    if (this.userId !== userId || this.deviceId !== deviceId)
      throw new CryptoError('CertificateMismatch', `the certificate is for device ${this.deviceId} of ${this.userId}`);
  }

  equals(o: DeviceCertificate): boolean {
    return equal(this.toBytes(), o.toBytes());
  }
}

/** "Device `deviceId` of `userId` with signing key `deviceKey` is removed", signed by the user identity. */
export class DeviceRemoval {
  constructor(
    readonly userKey: UserIdentityPublic,
    readonly userId: string,
    readonly deviceId: number,
    readonly deviceKey: Uint8Array,
    readonly signature: Uint8Array,
  ) {}

  toBytes(): Uint8Array {
    return concat(head(Kind.DEVICE_REMOVAL), this.userKey.key, str16(this.userId), u32(this.deviceId), this.deviceKey, this.signature);
  }

  static fromBytes(b: Uint8Array): DeviceRemoval {
    return decode(b, 'device removal', Kind.DEVICE_REMOVAL, (r) => {
      const userKey = UserIdentityPublic.read(r);
      const userId = r.userId();
      const deviceId = r.u32();
      const deviceKey = checkSigningKey(r.take(32), 'removed device key');
      const signature = r.take(64);
      if (!verifyStrict(userKey.key, removalMessage(userKey.key, userId, deviceId, deviceKey), signature))
        throw new CryptoError('BadRemovalSignature', 'the device removal signature does not verify');
      return new DeviceRemoval(userKey, userId, deviceId, deviceKey, signature);
    });
  }

  /** Whether this removal names the device `certificate` vouches for. */
  revokes(c: DeviceCertificate): boolean {
    return this.userKey.equals(c.userKey) && this.userId === c.userId && this.deviceId === c.deviceId && equal(this.deviceKey, c.device.signingKey);
  }
}

/** A device's published keys: identity, signed prekey and optionally one one-time prekey. */
export class PreKeyBundle {
  constructor(
    readonly identity: PublicIdentity,
    readonly signedPreKey: SignedPreKeyPublic,
    readonly oneTimePreKey: OneTimePreKeyPublic | null,
  ) {}

  toBytes(): Uint8Array {
    const otpk = this.oneTimePreKey;
    return concat(
      head(Kind.PREKEY_BUNDLE),
      this.identity.body(),
      this.signedPreKey.body(),
      otpk ? concat(new Uint8Array([1]), u32(otpk.id), otpk.key) : new Uint8Array([0]),
    );
  }

  static fromBytes(b: Uint8Array): PreKeyBundle {
    return decode(b, 'prekey bundle', Kind.PREKEY_BUNDLE, (r) => {
      const identity = PublicIdentity.readBody(r);
      const spk = SignedPreKeyPublic.readBody(r);
      const otpk = r.flag('one-time prekey flag') ? OneTimePreKeyPublic.readBody(r) : null;
      return new PreKeyBundle(identity, spk, otpk);
    });
  }

  /** Checks the certificate (by `trusted`, for `userId`/`deviceId`, vouching for this identity) and the prekey signature. */
  verify(certificate: DeviceCertificate, trusted: UserIdentityPublic, userId: string, deviceId: number): VerifiedPreKeyBundle {
    certificate.check(trusted, userId, deviceId);
    if (!certificate.device.equals(this.identity))
      throw new CryptoError('CertificateMismatch', 'the certificate vouches for another device identity than the bundle');
    this.signedPreKey.verify(this.identity);
    return { bundle: this, certificate };
  }
}

export interface VerifiedPreKeyBundle {
  bundle: PreKeyBundle;
  certificate: DeviceCertificate;
}

export { optU32 };
