/**
 * What is known not to exist upstream (a provider the registry answers 404
 * for, a platform a version does not list), remembered for a short time so
 * a client asking again and again — or asking for thousands of made-up
 * names — costs no upstream request each time. Bounded by entries, oldest
 * forgotten first, so made-up names cannot grow it without end.
 * @module
 */

/** A set of keys that expire after a TTL, bounded by count. */
export class NegativeCache {
  readonly #until = new Map<string, { at: number; until: number; reason: string }>();

  /**
   * @param ttlMs how long a key is remembered
   * @param maxEntries most keys held; adding past it drops the oldest
   * @param now the clock (injectable for tests)
   */
  constructor(
    readonly ttlMs: number,
    readonly maxEntries: number,
    readonly now: () => number = Date.now,
  ) {}

  /** Whether `key` was added less than the TTL ago. */
  has(key: string): boolean {
    return this.get(key) !== undefined;
  }

  /** The reason `key` was added with, while it is remembered. */
  get(key: string): string | undefined {
    const e = this.#until.get(key);
    if (e === undefined) return undefined;
    // Added "in the future" (the clock was set back): forgotten, or a mark
    // meant for seconds would last as long as the clock went back.
    const now = this.now();
    if (now >= e.at && now < e.until) return e.reason;
    this.#until.delete(key);
    return undefined;
  }

  /** Remembers `key` for the TTL (a no-op when the TTL or the bound is 0). */
  add(key: string, reason = "not found"): void {
    if (this.ttlMs <= 0 || this.maxEntries <= 0) return;
    this.#until.delete(key);
    const at = this.now();
    this.#until.set(key, { at, until: at + this.ttlMs, reason });
    while (this.#until.size > this.maxEntries) {
      this.#until.delete(this.#until.keys().next().value as string);
    }
  }

  /** Forgets `key` (it turned out to exist). */
  delete(key: string): void {
    this.#until.delete(key);
  }

  /** Number of keys held (expired ones included until looked at or pushed out). */
  get size(): number {
    return this.#until.size;
  }
}
