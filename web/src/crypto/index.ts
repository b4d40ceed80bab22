// kith end-to-end encryption, protocol version 2 (docs/crypto.md), for the browser.
export * from './bytes';
export * from './errors';
export * from './keys';
export * from './link';
export * from './message';
export * from './primitives';
export * from './replay';
export * from './safety';
export * from './session';
export * from './skipped';
