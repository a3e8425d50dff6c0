/**
 * A least-recently-used map bounded by bytes, not entries: each value is
 * stored with the cost its holder estimates for it, and the oldest values go
 * first once the total passes the bound. Entry counts say nothing about
 * memory when one hostile document can be a thousand times bigger than
 * another.
 * @module
 */

/** An LRU map whose bound is the sum of the costs of what it holds. */
export class ByteLru<K, V> {
  readonly #map = new Map<K, { value: V; cost: number }>();
  #bytes = 0;

  /** @param maxBytes the bound; a single value costing more is not kept at all */
  constructor(public maxBytes: number) {}

  /** The value for `key` (made the most recent), or undefined. */
  get(key: K): V | undefined {
    const e = this.#map.get(key);
    if (!e) return undefined;
    // Map iteration order is insertion order: re-inserting makes it the newest.
    this.#map.delete(key);
    this.#map.set(key, e);
    return e.value;
  }

  /** Whether `key` is held (without touching recency). */
  has(key: K): boolean {
    return this.#map.has(key);
  }

  /** The value without touching recency. */
  peek(key: K): V | undefined {
    return this.#map.get(key)?.value;
  }

  /**
   * Stores a value with its cost and evicts the oldest values past the
   * bound. Returns false when the value alone is over the bound (not kept).
   */
  set(key: K, value: V, cost: number): boolean {
    this.delete(key);
    if (cost > this.maxBytes) return false;
    this.#map.set(key, { value, cost });
    this.#bytes += cost;
    this.#trim();
    return true;
  }

  /** Removes a key; returns whether it was held. */
  delete(key: K): boolean {
    const e = this.#map.get(key);
    if (!e) return false;
    this.#map.delete(key);
    this.#bytes -= e.cost;
    return true;
  }

  /** Changes the bound, evicting at once if it shrank. */
  resize(maxBytes: number): void {
    this.maxBytes = maxBytes;
    this.#trim();
  }

  /** The summed cost of what is held. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Number of values held. */
  get size(): number {
    return this.#map.size;
  }

  #trim(): void {
    while (this.#bytes > this.maxBytes && this.#map.size > 0) {
      const oldest = this.#map.keys().next().value as K;
      this.delete(oldest);
    }
  }
}
