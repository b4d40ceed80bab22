// Linking a device with a one-time code (docs/crypto.md, Linking a device).
import { Reader, VERSION, concat, equal, hex, str16, u32 } from './bytes';
import { CryptoError } from './errors';
import { DeviceCertificate, DeviceIdentity, Kind, PublicIdentity, UserIdentity } from './keys';
import { Rng, ZERO32, checkDhPublic, dh, hkdf, open, seal, sha256, xPublic } from './primitives';

export interface LinkCode {
  userId: string;
  secret: Uint8Array;
}

export function generateLinkSecret(rng: Rng): Uint8Array {
  return rng().slice(0, 16);
}

export function linkId(secret: Uint8Array): Uint8Array {
  return hkdf(ZERO32, secret, 'kith-link-id-v2', 16);
}

export function linkCodeText(code: LinkCode): string {
  return `${code.userId}/${hex(code.secret).match(/.{4}/g)!.join('-')}`;
}

export function parseLinkCode(text: string): LinkCode {
  const t = text.trim();
  const slash = t.lastIndexOf('/');
  if (slash < 0) throw new CryptoError('InvalidLinkCode', "no '/' after the user id");
  const userId = t.slice(0, slash);
  str16(userId);
  const digits = t.slice(slash + 1).replace(/[- ]/g, '');
  if (digits.length !== 32) throw new CryptoError('InvalidLinkCode', 'the secret must be 32 hex digits');
  if (/[^0-9a-fA-F]/.test(digits)) throw new CryptoError('InvalidLinkCode', 'the secret must be hex digits');
  const secret = new Uint8Array(16);
  for (let i = 0; i < 16; i++) secret[i] = parseInt(digits.slice(2 * i, 2 * i + 2), 16);
  return { userId, secret };
}

function splitHead(bytes: Uint8Array, kind: number, what: string, secret: Uint8Array): { head: Uint8Array; ephemeral: Uint8Array; sealed: Uint8Array } {
  const r = new Reader(bytes, what);
  r.header(kind);
  const id = r.take(16);
  const ephemeral = checkDhPublic(r.take(32), `${what} ephemeral key`);
  if (!equal(id, linkId(secret))) throw new CryptoError('LinkAuthenticationFailed', `${what} is for another link code`);
  return { head: bytes.slice(0, 50), ephemeral, sealed: r.rest() };
}

/** The new device's request: keeps its ephemeral secret to open the answer. */
export interface LinkRequest {
  bytes: Uint8Array;
  ephemeralSecret: Uint8Array;
  userId: string;
  deviceId: number;
  identity: PublicIdentity;
}

export function newLinkRequest(code: LinkCode, deviceId: number, device: DeviceIdentity, rng: Rng): LinkRequest {
  const eb = rng();
  const head = concat(new Uint8Array([VERSION, Kind.LINK_REQUEST]), linkId(code.secret), xPublic(eb));
  const key = hkdf(ZERO32, concat(code.secret, xPublic(eb)), 'kith-link-request-v2', 44);
  const body = concat(str16(code.userId), u32(deviceId), device.public.body());
  return { bytes: concat(head, seal(key, head, body)), ephemeralSecret: eb, userId: code.userId, deviceId, identity: device.public };
}

export interface OpenedLinkRequest {
  userId: string;
  deviceId: number;
  identity: PublicIdentity;
  ephemeral: Uint8Array;
  bytes: Uint8Array;
}

/** The existing device opens a request with the secret it showed. */
export function openLinkRequest(secret: Uint8Array, bytes: Uint8Array): OpenedLinkRequest {
  const { head, ephemeral, sealed } = splitHead(bytes, Kind.LINK_REQUEST, 'link request', secret);
  const key = hkdf(ZERO32, concat(secret, ephemeral), 'kith-link-request-v2', 44);
  const body = open(key, head, sealed);
  if (body === null) throw new CryptoError('LinkAuthenticationFailed', 'the link request was not made with this code');
  const r = new Reader(body, 'link request body');
  const userId = r.userId();
  const deviceId = r.u32();
  const identity = PublicIdentity.readBody(r);
  r.finish();
  return { userId, deviceId, identity, ephemeral, bytes };
}

/** The existing device certifies the new one and answers with the certificate and the user identity. */
export function newLinkResponse(secret: Uint8Array, request: OpenedLinkRequest, user: UserIdentity, rng: Rng): Uint8Array {
  const certificate = user.certify(request.userId, request.deviceId, request.identity);
  const ea = rng();
  const head = concat(new Uint8Array([VERSION, Kind.LINK_RESPONSE]), linkId(secret), xPublic(ea));
  const key = hkdf(secret, dh(ea, request.ephemeral, 'link response'), 'kith-link-response-v2', 44);
  return concat(head, seal(key, concat(head, sha256(request.bytes)), concat(certificate.body(), user.seed)));
}

export interface LinkedDevice {
  userIdentity: UserIdentity;
  certificate: DeviceCertificate;
}

/** The new device opens the answer and checks it certifies exactly what it asked for. */
export function openLinkResponse(secret: Uint8Array, request: LinkRequest, bytes: Uint8Array): LinkedDevice {
  const { head, ephemeral, sealed } = splitHead(bytes, Kind.LINK_RESPONSE, 'link response', secret);
  const key = hkdf(secret, dh(request.ephemeralSecret, ephemeral, 'link response'), 'kith-link-response-v2', 44);
  const body = open(key, concat(head, sha256(request.bytes)), sealed);
  if (body === null) throw new CryptoError('LinkAuthenticationFailed', 'the link response does not authenticate');
  const r = new Reader(body, 'link response body');
  const certificate = DeviceCertificate.readBody(r);
  const userIdentity = new UserIdentity(r.take(32));
  r.finish();
  if (!userIdentity.public.equals(certificate.userKey)) throw new CryptoError('LinkMismatch', 'the certificate is not by the user identity sent');
  if (certificate.userId !== request.userId || certificate.deviceId !== request.deviceId || !certificate.device.equals(request.identity))
    throw new CryptoError('LinkMismatch', 'the certificate is not for this device');
  return { userIdentity, certificate };
}
