/** Every failure of the protocol code: `code` names the case (as kith-crypto's `CryptoError` variants do). */
export class CryptoError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'CryptoError';
  }
}
