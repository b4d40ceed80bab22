// Safety numbers per pair of users (docs/crypto.md, Safety numbers).
import { concat, u64, utf8 } from './bytes';
import { UserIdentityPublic } from './keys';
import { sha512 } from './primitives';

export const SAFETY_NUMBER_ITERATIONS = 5200;

function fingerprint(identity: UserIdentityPublic, userId: string): string {
  const key = identity.key;
  const id = utf8(userId);
  let h = sha512(concat(utf8('kith-safety-number-v2'), new Uint8Array([0]), key, u64(id.length), id));
  for (let i = 0; i < SAFETY_NUMBER_ITERATIONS; i++) h = sha512(concat(h, key));
  let digits = '';
  for (let c = 0; c < 6; c++) {
    let v = 0;
    for (let j = 0; j < 5; j++) v = v * 256 + h[c * 5 + j];
    digits += String(v % 100000).padStart(5, '0');
  }
  return digits;
}

/** The 60-digit number both users see, in 12 groups of 5. */
export function safetyNumber(a: UserIdentityPublic, userA: string, b: UserIdentityPublic, userB: string): string {
  const fa = fingerprint(a, userA);
  const fb = fingerprint(b, userB);
  const all = fa <= fb ? fa + fb : fb + fa;
  return all.match(/.{5}/g)!.join(' ');
}
