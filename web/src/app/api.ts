// The node's REST API (docs/api.md), same origin; every failure becomes an ApiError in words.
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export class NetworkError extends Error {
  constructor() {
    super('the server cannot be reached; check the connection');
  }
}

export interface AuthResponse {
  userId: string;
  deviceId: number;
  token: string;
}

export interface KeysResponse {
  userId: string;
  userIdentity?: string;
  devices: { deviceId: number; bundle: string; certificate?: string }[];
  removals?: string[];
}

export class Api {
  constructor(public token = '') {}

  async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    let res: Response;
    try {
      res = await fetch(path, {
        method,
        headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...(this.token ? { authorization: `Bearer ${this.token}` } : {}) },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch {
      throw new NetworkError();
    }
    const text = await res.text();
    let json: unknown = undefined;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      /* not JSON */
    }
    if (!res.ok) {
      const err = (json as { error?: { code?: string; message?: string } } | undefined)?.error;
      throw new ApiError(res.status, err?.code ?? 'http', err?.message ?? `the server answered ${res.status}`);
    }
    return json as T;
  }

  register(username: string, password: string, deviceId: number) {
    return this.call<AuthResponse>('POST', '/api/v1/register', { username, password, deviceId });
  }
  login(username: string, password: string, deviceId: number) {
    return this.call<AuthResponse>('POST', '/api/v1/login', { username, password, deviceId });
  }
  publishKeys(body: { identity: string; signedPreKey: string; oneTimePreKeys: string[]; certificate: string; resetUserIdentity: boolean }) {
    return this.call<{ deviceId: number; oneTimePreKeys: number }>('PUT', '/api/v1/keys', body);
  }
  keyCount() {
    return this.call<{ deviceId: number; oneTimePreKeys: number }>('GET', '/api/v1/keys/count');
  }
  devices(user: string) {
    return this.call<KeysResponse>('GET', `/api/v1/keys/${encodeURIComponent(user)}/devices`);
  }
  claim(user: string) {
    return this.call<KeysResponse>('GET', `/api/v1/keys/${encodeURIComponent(user)}`);
  }
  send(senderId: string, receiverId: string, message: string, clientMessageId: string) {
    return this.call<{ status: string; messageId: string; timestamp: string }>('POST', '/api/v1/messages', { senderId, receiverId, message, clientMessageId });
  }
  presence(user: string) {
    return this.call<{ userId: string; status: string; lastSeen: string | null }>('GET', `/api/v1/presence/${encodeURIComponent(user)}`);
  }
}

/** A sentence for any error, for the screen. */
export function inWords(e: unknown): string {
  if (e instanceof ApiError) {
    switch (e.code) {
      case 'invalid_credentials':
        return 'Wrong username or password.';
      case 'username_taken':
        return 'That username is taken; choose another.';
      case 'rate_limited':
        return 'Too many attempts; wait a moment and try again.';
      case 'token_expired':
        return 'Your login expired; log in again.';
      default:
        return `${e.message.charAt(0).toUpperCase()}${e.message.slice(1)}.`;
    }
  }
  if (e instanceof Error) return e.message.charAt(0).toUpperCase() + e.message.slice(1);
  return String(e);
}
