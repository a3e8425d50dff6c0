/**
 * The stored-entry cache under the upstream metadata: an entry in `refs/` is
 * served while fresh, otherwise fetched (or revalidated) from the upstream
 * with one request shared by concurrent callers; what the upstream says does
 * not exist is remembered in a bounded {@link NegativeCache}; a refresh that
 * fails or is slow gets the stored copy served stale, and for 10 s after a
 * registry failed, its stored copies are served stale at once (a document
 * that fails again right after marking it gets a gap of its own instead, so
 * one broken document cannot keep a healthy registry marked). What each entry is and
 * how it is fetched is the caller's (`metadata.ts`'s) business.
 * @module
 */
import type { Logger } from "../base/log.ts";
import { traced, traceNote, tracing } from "../base/trace.ts";
import { NotFoundError, UpstreamError, UpstreamTimeoutError } from "../http/errors.ts";
import { NegativeCache } from "../cache/negative_cache.ts";
import type { Sourced } from "../cache/cache_status.ts";
import type { RefEntry, RefsStore } from "../cache/refs_store.ts";

/** How long a refresh may take before a stored (expired) copy is served instead. */
const STALE_GRACE_MS = 2_000;
const SLOW = Symbol("slow");

async function raceStale<T>(p: Promise<T>, ms: number): Promise<T | typeof SLOW> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<typeof SLOW>((r) => timer = setTimeout(() => r(SLOW), ms)),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** What a fetcher answers when the upstream confirmed the stored entry (304). */
export const NOT_MODIFIED = Symbol("not modified");

/**
 * After a refresh failed because the upstream is unreachable, slow or
 * answering 5xx, how long stored copies of that registry's documents are
 * answered stale at once instead of each request retrying it: an outage costs
 * one failed refresh per registry per gap, not one per request (an `init`
 * reads two documents per provider). Short enough to keep the freshness
 * bound well inside a minute once the upstream is back.
 */
const FAILING_UPSTREAM_GAP_MS = 10_000;

/**
 * How long a list may go on being confirmed by 304s before it is fetched
 * whole anyway: an upstream (or a CDN before it) whose validators do not
 * follow its content would otherwise hide new releases for ever, while a
 * client asking it directly (unconditionally) sees them. One full fetch
 * per provider per 10 min costs little.
 */
const FULL_REFETCH_MS = 10 * 60_000;

/** An error that says the upstream is down or failing (not that a document is bad or absent). */
function upstreamFailing(e: unknown): boolean {
  return e instanceof UpstreamTimeoutError || (e instanceof UpstreamError && e.transient);
}

/** The outcome of one refresh of an entry, shared by every caller waiting for it. */
interface Refreshed {
  entry: RefEntry;
  /** The stored entry was confirmed unchanged (not fetched again). */
  revalidated: boolean;
}

/**
 * Parses a stored entry once. RefsStore hands out the same entry object until
 * the entry is replaced or evicted, so keying by the object keeps the parsed
 * value exactly as fresh as the entry and lets it go with the entry. Without
 * this a metadata hit re-parsed the whole upstream version list (hundreds of
 * KB for big providers) on every request.
 */
export function parsedOnce<T>(memo: WeakMap<RefEntry, T>, entry: RefEntry, parse: () => T): T {
  let v = memo.get(entry);
  if (v === undefined) {
    v = parse();
    memo.set(entry, v);
  }
  return v;
}

/** Entries of `refs/` kept with their freshness rules, single-flight and negative cache. */
export class RefCache {
  readonly #inflight = new Map<string, Promise<Refreshed>>();
  /**
   * When an entry confirmed by 304s was last fetched whole (its time moves
   * with each 304). Absent for an entry never confirmed: its own time.
   */
  readonly #fullAt = new WeakMap<RefEntry, number>();
  /** Keys the upstream said do not exist (and provider/version/platform it does not list). */
  readonly negative: NegativeCache;
  /** Registries (hostnames) whose last refresh failed less than FAILING_UPSTREAM_GAP_MS ago. */
  readonly #failing: NegativeCache;
  /** The document whose failure last marked each registry failing. */
  readonly #gapCause = new Map<string, string>();
  /** Documents whose refresh failed again after marking their registry: a gap of their own. */
  readonly #failingKeys: NegativeCache;

  constructor(
    readonly refs: RefsStore,
    readonly log: Logger,
    readonly now: () => number,
    negativeTtlMs: number,
    negativeEntries: number,
  ) {
    this.negative = new NegativeCache(negativeTtlMs, negativeEntries, now);
    this.#failing = new NegativeCache(FAILING_UPSTREAM_GAP_MS, negativeEntries, now);
    this.#failingKeys = new NegativeCache(FAILING_UPSTREAM_GAP_MS, negativeEntries, now);
  }

  /**
   * Remembers a refresh that failed because the upstream is down or failing.
   * The registry is marked (its stored copies answered stale for the gap)
   * unless the same document marked it last time: one document the registry
   * keeps failing (a broken provider, asked for by every CI run) would
   * otherwise keep a healthy registry marked, and every other provider's
   * new releases hidden, for as long as it is asked for. That document then
   * gets a gap of its own; another document failing marks the registry again.
   */
  #markFailing(hostname: string, key: string, why: string): void {
    if (this.#gapCause.get(hostname) === key) {
      this.#failingKeys.add(key, why);
      return;
    }
    this.#gapCause.set(hostname, key);
    this.#failing.add(hostname, why);
  }

  /** Stores an entry; a full or read-only disk must not turn a good upstream answer into an error. */
  async store(key: string, entry: RefEntry): Promise<void> {
    try {
      await this.refs.put(key, entry);
    } catch (e) {
      this.log.error("cannot write metadata to the cache; serving it uncached", {
        key,
        error: (e as Error).message,
      });
    }
  }

  /**
   * Returns a stored entry, fetching it when missing or older than `ttlMs`.
   * Concurrent callers for one key share one upstream request.
   *
   * The fetcher gets the stored entry (when there is one) so it can
   * revalidate it: answering {@link NOT_MODIFIED} (the upstream's 304) keeps
   * the stored entry, object and bytes, and only moves its time
   * (status `revalidated`).
   *
   * Traced as a "cache lookup" span: the upstream request, if any, nests in it.
   */
  cached(
    key: string,
    ttlMs: number,
    fetcher: (stored: RefEntry | undefined) => Promise<RefEntry | typeof NOT_MODIFIED>,
    opts: { force?: boolean; hostname: string },
  ): Promise<Sourced<RefEntry>> {
    if (!tracing()) return this.#cached(key, ttlMs, fetcher, opts);
    return traced(
      "cache lookup",
      { key },
      () => this.#cached(key, ttlMs, fetcher, opts),
      (r) => ({ decision: r.status }),
    );
  }

  async #cached(
    key: string,
    ttlMs: number,
    fetcher: (stored: RefEntry | undefined) => Promise<RefEntry | typeof NOT_MODIFIED>,
    opts: { force?: boolean; hostname: string },
  ): Promise<Sourced<RefEntry>> {
    const stored = await this.refs.get(key);
    // An entry "fetched in the future" (the clock was set back, or another
    // host's clock wrote it) is not fresh: it would otherwise hide new
    // releases for as long as the clock was off.
    const age = stored ? this.now() - stored.fetchedAt : NaN;
    const fresh = stored && !opts.force && (ttlMs === Infinity || (age >= 0 && age < ttlMs));
    if (stored && fresh) return { value: stored, status: "hit", fetchedAt: stored.fetchedAt };
    const missing = this.negative.get(key);
    if (missing !== undefined) throw new NotFoundError(missing);
    // The registry failed a refresh moments ago: the stored copy now, rather
    // than every request of an outage waiting for its own retries.
    if (stored && (this.#failing.has(opts.hostname) || this.#failingKeys.has(key))) {
      return { value: stored, status: "stale", fetchedAt: stored.fetchedAt };
    }
    let p = this.#inflight.get(key);
    // Another request's upstream fetch for this key is already under way: wait for it.
    traceNote("joined", p !== undefined);
    if (!p) {
      p = (async (): Promise<Refreshed> => {
        let got: RefEntry | typeof NOT_MODIFIED;
        try {
          // Confirmed by 304s for too long: ask unconditionally this time.
          const fullAt = stored && (this.#fullAt.get(stored) ?? stored.fetchedAt);
          const offer = stored && this.now() - fullAt! < FULL_REFETCH_MS ? stored : undefined;
          got = await fetcher(offer);
          if (got === NOT_MODIFIED) {
            // Unchanged upstream: same object (its parsed forms, the kept
            // answers' generation) with a new time, nothing rewritten.
            if (offer && await this.refs.touch(key, offer, this.now())) {
              this.#fullAt.set(offer, fullAt!);
              // Pruned between the touch and this read: the copy we confirmed is still good.
              const entry = (await this.refs.get(key)) ?? { ...offer, fetchedAt: this.now() };
              return { entry, revalidated: true };
            }
            // The entry went away or changed meanwhile (pruned, another
            // process wrote it): the 304 was about another copy, fetch it whole.
            got = await fetcher(undefined);
            if (got === NOT_MODIFIED) {
              throw new UpstreamError(`upstream ${opts.hostname} answered 304 unasked`);
            }
          }
        } catch (e) {
          if (e instanceof NotFoundError) this.negative.add(key, e.message);
          if (upstreamFailing(e)) this.#markFailing(opts.hostname, key, (e as Error).message);
          throw e;
        }
        this.#failing.delete(opts.hostname);
        this.#failingKeys.delete(key);
        await this.store(key, got);
        // The store keeps the object it already handed out when the bytes
        // are the same: answer with that one, whose parsed forms exist.
        const entry = (await this.refs.get(key)) ?? got;
        this.#fullAt.delete(entry);
        return { entry, revalidated: false };
      })();
      this.#inflight.set(key, p);
      p.finally(() => this.#inflight.delete(key)).catch(() => {});
    }
    try {
      // With a stored copy to fall back on, a slow upstream should not make
      // the client wait: past a short grace period the stale copy is served
      // and the refresh goes on in the background.
      const done = stored ? await raceStale(p, STALE_GRACE_MS) : await p;
      if (done === SLOW) {
        this.log.warn("upstream slow; serving stale metadata while refreshing", {
          upstream: opts.hostname,
          key,
        });
        return { value: stored!, status: "stale", fetchedAt: stored!.fetchedAt };
      }
      const { entry, revalidated } = done;
      return {
        value: entry,
        status: revalidated ? "revalidated" : "miss",
        fetchedAt: entry.fetchedAt,
      };
    } catch (e) {
      // A definite "not found" upstream is not a reason to serve stale data
      // for a version list, but it is for everything kept for good.
      if (stored && !(e instanceof NotFoundError && ttlMs !== Infinity)) {
        this.log.warn("upstream failed; serving stale metadata", {
          upstream: opts.hostname,
          key,
          error: (e as Error).message,
        });
        return { value: stored, status: "stale", fetchedAt: stored.fetchedAt };
      }
      throw e;
    }
  }

  /** Refreshes still in flight (shutdown, tests). */
  pending(): Promise<unknown>[] {
    return [...this.#inflight.values()];
  }
}
