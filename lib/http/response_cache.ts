/**
 * Finished metadata answers (network mirror `index.json` and
 * `{version}.json`, registry `versions` and `download` documents) kept in
 * memory, so a hit skips routing, the refs lookups and rendering: it costs a
 * map lookup and a Response.
 *
 * An answer is only reused while it is exactly what the slow path would
 * produce: it records the refs store's generation when the request began
 * (any metadata or archive write bumps it) and the moment its version list
 * stops being fresh. The key is the request path, so answers must not depend
 * on request headers; bounded by entries and bytes (text plus a per-entry
 * overhead: with a hostile mix of tiny answers the overhead is what counts),
 * oldest out first.
 * @module
 */

/** One cached answer. */
export interface CachedAnswer {
  text: string;
  /** Size in bytes (UTF-8), for the memory bound and Content-Length. */
  length: number;
  etag: string;
  /** `max-age` of the answer, in seconds. */
  maxAge: number;
  /** The route kind that produced it (for metrics on the fast path). */
  route: string;
  /** Refs generation observed before any of the answer's inputs were read. */
  generation: number;
  /** Clock value (ms) from which the answer's version list is no longer fresh. */
  expiresAt: number;
}

/** What an answer is charged: UTF-16 text, its path and the record around them. */
function costOf(path: string, a: CachedAnswer): number {
  return 2 * (a.text.length + path.length + a.etag.length) + 128;
}

/** Path → answer, valid only for the current refs generation and before expiry. */
export class ResponseCache {
  readonly #answers = new Map<string, CachedAnswer>();
  #bytes = 0;

  constructor(
    readonly generation: () => number,
    readonly now: () => number,
    readonly maxEntries = 4096,
    readonly maxBytes = 16 * 1024 * 1024,
  ) {}

  /** The answer for `path`, if it is still current. */
  get(path: string): CachedAnswer | undefined {
    const a = this.#answers.get(path);
    if (!a) return undefined;
    if (a.generation !== this.generation() || this.now() >= a.expiresAt) {
      this.#drop(path, a);
      return undefined;
    }
    return a;
  }

  /** Stores an answer (ignored when it is already outdated or too big). */
  put(path: string, a: CachedAnswer): void {
    if (a.generation !== this.generation() || costOf(path, a) > this.maxBytes / 8) return;
    const old = this.#answers.get(path);
    if (old) this.#drop(path, old);
    this.#answers.set(path, a);
    this.#bytes += costOf(path, a);
    while (this.#answers.size > this.maxEntries || this.#bytes > this.maxBytes) {
      const [oldestPath, oldest] = this.#answers.entries().next().value!;
      this.#drop(oldestPath, oldest);
    }
  }

  /** Bytes charged for the answers held (never above `maxBytes`). */
  get bytes(): number {
    return this.#bytes;
  }

  /** Number of answers held (for tests and metrics). */
  get size(): number {
    return this.#answers.size;
  }

  #drop(path: string, a: CachedAnswer) {
    this.#answers.delete(path);
    this.#bytes -= costOf(path, a);
  }
}

/** The path of an absolute request URL, without parsing it: the key of a kept answer. */
export function pathOf(url: string): string {
  const start = url.indexOf("/", url.indexOf("//") + 2);
  if (start < 0) return "/";
  const q = url.indexOf("?", start);
  return q < 0 ? url.slice(start) : url.slice(start, q);
}
