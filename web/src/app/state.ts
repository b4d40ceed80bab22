// The persisted state of this browser's device, and its decrypted history (all sealed at rest).

export interface Contact {
  /** The pinned user identity (hex of the 32-byte key), null until first contact. */
  identity: string | null;
  /** A different identity the node or a first message presented, until the user accepts it. */
  changedIdentity: string | null;
  /** Certified devices: device id → certificate (hex). */
  devices: Record<string, string>;
  /** Removals by the pinned identity (hex), kept for good. */
  removals: string[];
  fetchedAt: number;
}

export interface Outgoing {
  clientMessageId: string;
  to: string;
  text: string;
  message: string;
  localId: string;
}

export interface State {
  version: 2;
  userId: string;
  deviceId: number;
  token: string;
  userIdentity: string;
  device: string;
  certificate: string;
  /** Newest first: { key bytes (hex), created ms }. */
  signedPreKeys: { key: string; created: number }[];
  oneTimePreKeys: Record<string, string>;
  nextPreKeyId: number;
  replay: string;
  keysPublished: boolean;
  contacts: Record<string, Contact>;
  /** `user|device` → sessions (hex), the one in use first, at most 5. */
  sessions: Record<string, string[]>;
  processed: string[];
  outbox: Outgoing[];
  conversations: Record<string, ConversationMeta>;
}

export interface ConversationMeta {
  peer: string;
  last: string;
  lastAt: string;
  unread: number;
}

export type Status = 'pending' | 'sent' | 'delivered' | 'read';

export interface Entry {
  /** The node's message id, or a local id until the node stores it. */
  id: string;
  from: string;
  to: string;
  at: string;
  text: string | null;
  /** Why the message could not be read (text is null then). */
  problem?: string;
  unencrypted?: boolean;
  /** Own messages only. */
  status?: Status;
}
