// IndexedDB: one object store of sealed records (the key file in clear: it holds no secret).
const DB = 'kith';
const STORE = 'records';

function request<T>(r: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

export class Db {
  private constructor(private readonly db: IDBDatabase) {}

  static async open(): Promise<Db> {
    const r = indexedDB.open(DB, 1);
    r.onupgradeneeded = () => r.result.createObjectStore(STORE);
    return new Db(await request(r));
  }

  async get<T>(key: string): Promise<T | undefined> {
    return request(this.db.transaction(STORE, 'readonly').objectStore(STORE).get(key)) as Promise<T | undefined>;
  }

  /** Writes several records in one transaction: all or nothing. */
  async put(records: Record<string, unknown>): Promise<void> {
    const tx = this.db.transaction(STORE, 'readwrite', { durability: 'strict' });
    const store = tx.objectStore(STORE);
    for (const [k, v] of Object.entries(records)) store.put(v, k);
    await new Promise<void>((resolve, reject) => {
      tx.oncomplete = () => resolve();
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  }

  async clear(): Promise<void> {
    await request(this.db.transaction(STORE, 'readwrite').objectStore(STORE).clear());
  }
}
