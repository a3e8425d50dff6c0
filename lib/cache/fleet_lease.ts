/**
 * One upstream fetch per archive across a fleet of replicas, with the shared
 * object store as the only coordinator ({@link CoordinationStore}): no
 * replica talks to another, and no replica's clock is trusted.
 *
 * - The replica that wants an archive nobody has creates its lease object
 *   (`leases/…`, derived from the package key) with `If-None-Match: *`; the
 *   store lets exactly one creator win.
 * - The holder renews it (`If-Match` on its last ETag) every `renewMs`, well
 *   inside `ttlMs`, publishing its progress (bytes received, size announced)
 *   in the body; it fetches, verifies, commits to storage, then deletes the
 *   lease (`If-Match`, so it never deletes a taker's).
 * - A lease whose store timestamp (`Last-Modified` against the store's own
 *   `Date`) is older than `ttlMs` belongs to a dead holder: a waiter takes it
 *   over with `If-Match` on the ETag it read, and the store lets exactly one
 *   taker win. Every body carries its owner and a sequence number, so no two
 *   writes have the same bytes — S3 ETags are content hashes, and a renewal
 *   that wrote the same bytes as a taker would otherwise keep matching.
 * - The others wait: a partial S3 object cannot be read, so a waiter polls
 *   the lease (every quarter of the time waited so far, between `pollMinMs`
 *   and `pollMaxMs`) until the holder deletes it after its commit, then
 *   streams the committed archive. It stops waiting and fetches the archive
 *   itself — serving its client beats strict one-fetch — when the wait reaches `maxWaitMs` (`storage.leaseWait`,
 *   default 30 s: a client behind a load balancer gets nothing meanwhile, and
 *   nginx gives up on a silent upstream after 60 s), or earlier when the
 *   holder's published rate says it cannot finish within that time. A holder
 *   that failed deletes its lease, so a waiter becomes the next holder at
 *   once instead of after the TTL.
 * - A store that cannot be reached coordinates nothing: the replica fetches
 *   by itself (a bucket outage must not stop service).
 *
 * Without a coordination store (local disk) none of this runs.
 * @module
 */
import type { Logger } from "../base/log.ts";
import type { CoordinationStore } from "./coordination.ts";

/** A lease not renewed for this long (by the store's clock) is taken over. */
export const DEFAULT_LEASE_TTL_MS = 15_000;
/** Longest a replica waits for another one's download before fetching itself. */
export const DEFAULT_MAX_WAIT_MS = 30_000;
/** Store errors in a row after which a replica fetches without a lease. */
const MAX_STORE_FAILURES = 3;
/** S3's `Last-Modified` has one-second precision: a shorter TTL would misjudge. */
const MIN_TTL_MS = 3_000;

/** Tuning of {@link FleetLeases}; every field has a default. */
export interface FleetTuning {
  /** Store-clock age after which a lease counts as abandoned (default 15 s, at least 3 s). */
  ttlMs?: number | undefined;
  /** How often a holder renews its lease (default `ttlMs / 5`). */
  renewMs?: number | undefined;
  /** Longest a waiter waits before fetching the archive itself (default 30 s). */
  maxWaitMs?: number | undefined;
  /** Shortest pause between polls of a waiter (default 25 ms); then a quarter of the time waited. */
  pollMinMs?: number | undefined;
  /**
   * Longest pause between polls (default 500 ms): what a waiter's client may
   * lose after the commit, against two small requests (HEAD, GET) per poll.
   */
  pollMaxMs?: number | undefined;
  /** Who this replica is, in lease bodies and logs (default: a random id). */
  replica?: string | undefined;
}

/** Settings of {@link FleetLeases}. */
export interface FleetOptions extends FleetTuning {
  store: CoordinationStore;
}

/** What a holder has received so far (published in its lease). */
export interface LeaseProgress {
  written: number;
  size: number | undefined;
}

/** How {@link FleetLeases.acquire} ended. */
export type Acquired<M> =
  /** This replica holds the lease: fetch, commit, then {@link HeldLease.release}. */
  | { kind: "held"; lease: HeldLease }
  /** Another replica committed the archive: serve the stored copy. */
  | { kind: "committed"; meta: M }
  /** No lease to be had in time (or no store): fetch without one. */
  | { kind: "unleased"; why: string };

/** What {@link FleetLeases} did, for metrics and tests. */
export interface FleetStats {
  /** Leases this replica created. */
  created: number;
  /** Stale leases this replica took over. */
  takenOver: number;
  /** Archives served from another replica's commit after waiting. */
  waitedForCommit: number;
  /** Fetches done without a lease (waited too long, store unreachable). */
  unleased: number;
  /** Renewals that failed (store errors) or found the lease taken over. */
  renewFailures: number;
}

/** The lease key of a package key (`packages/h/ns/t/x.zip` → `leases/h/ns/t/x.zip.lease`). */
export function leaseKey(packageKey: string): string {
  return "leases/" + packageKey.replace(/^packages\//, "") + ".lease";
}

interface LeaseBody {
  owner: string;
  seq: number;
  written: number;
  size: number | null;
}

function encodeBody(b: LeaseBody): Uint8Array {
  return new TextEncoder().encode(JSON.stringify({ v: 1, ...b }) + "\n");
}

function decodeBody(bytes: Uint8Array): LeaseBody | undefined {
  try {
    const o = JSON.parse(new TextDecoder().decode(bytes));
    if (typeof o?.owner !== "string" || typeof o.written !== "number") return undefined;
    return { owner: o.owner, seq: Number(o.seq) || 0, written: o.written, size: o.size ?? null };
  } catch {
    return undefined;
  }
}

/** Leases of one replica on one coordination store. */
export class FleetLeases {
  readonly stats: FleetStats = {
    created: 0,
    takenOver: 0,
    waitedForCommit: 0,
    unleased: 0,
    renewFailures: 0,
  };
  readonly store: CoordinationStore;
  readonly ttlMs: number;
  readonly renewMs: number;
  readonly maxWaitMs: number;
  readonly replica: string;
  readonly #pollMinMs: number;
  readonly #pollMaxMs: number;

  constructor(opts: FleetOptions, readonly log: Logger) {
    this.store = opts.store;
    this.ttlMs = Math.max(MIN_TTL_MS, opts.ttlMs ?? DEFAULT_LEASE_TTL_MS);
    // Well inside the TTL: a renewal may be late by a slow store round trip.
    this.renewMs = Math.min(opts.renewMs ?? this.ttlMs / 5, this.ttlMs / 3);
    this.maxWaitMs = opts.maxWaitMs ?? DEFAULT_MAX_WAIT_MS;
    this.#pollMinMs = opts.pollMinMs ?? 25;
    this.#pollMaxMs = Math.max(this.#pollMinMs, opts.pollMaxMs ?? 500);
    this.replica = opts.replica ?? crypto.randomUUID().slice(0, 8);
  }

  /**
   * Gets the lease of an archive, or waits for the replica that holds it to
   * commit the archive, or gives up waiting. `committed` says whether (and
   * as what) the archive is in storage now; `progress` is what a holder
   * publishes while it renews.
   * @throws the signal's reason when it aborts (shutdown)
   */
  async acquire<M>(
    packageKey: string,
    opts: {
      committed: () => Promise<M | undefined>;
      progress: () => LeaseProgress;
      signal?: AbortSignal | undefined;
    },
  ): Promise<Acquired<M>> {
    const key = leaseKey(packageKey);
    // Unique per acquisition: two downloads of one archive in one replica
    // (a failed one and its retry) never pass for each other.
    const owner = `${this.replica}-${crypto.randomUUID().slice(0, 8)}`;
    const body = (seq: number) => {
      const p = opts.progress();
      return encodeBody({ owner, seq, written: p.written, size: p.size ?? null });
    };
    const started = performance.now();
    /** First progress seen of the current holder (its owner, bytes, when). */
    let first: { owner: string; written: number; at: number } | undefined;
    const won = async (etag: string, how: "created" | "takenOver"): Promise<Acquired<M>> => {
      // The last holder may have committed and deleted its lease between our
      // look and our write: then there is nothing to fetch.
      // (Unknown counts as not committed: we hold the lease, so we fetch.)
      const meta = await opts.committed().catch(() => undefined);
      if (meta !== undefined) {
        await this.store.remove(key, etag).catch(() => {});
        this.stats.waitedForCommit++;
        return { kind: "committed", meta };
      }
      this.stats[how]++;
      const lease = new HeldLease(this, key, etag, (seq) => body(seq));
      lease.start();
      return { kind: "held", lease };
    };
    const unleased = (why: string): Acquired<M> => {
      this.stats.unleased++;
      this.log.warn("fetching the archive without a fleet lease", { key: packageKey, reason: why });
      return { kind: "unleased", why };
    };
    // The first look skips the read: most archives have no lease.
    let assumeFree = true;
    let failures = 0;
    while (true) {
      opts.signal?.throwIfAborted();
      try {
        // Only the lease is polled: a holder deletes it right after its
        // commit (one request per poll instead of two).
        const cur = assumeFree ? undefined : await this.store.read(key);
        if (!cur) {
          // Nobody holds it: the holder committed, or gave up, or nobody
          // asked before.
          if (!assumeFree) {
            const meta = await opts.committed();
            if (meta !== undefined) {
              this.stats.waitedForCommit++;
              return { kind: "committed", meta };
            }
          }
          assumeFree = false;
          const c = await this.store.create(key, body(0));
          if (c !== "exists") return await won(c.etag, "created");
          continue;
        }
        const age = cur.serverNow.getTime() - cur.lastModified.getTime();
        if (age > this.ttlMs) {
          const r = await this.store.replace(key, body(0), cur.etag);
          if (r !== "changed") {
            const was = decodeBody(cur.body);
            this.log.warn("took over an abandoned archive lease", {
              key: packageKey,
              holder: was?.owner ?? "unknown",
              staleMs: age,
            });
            return await won(r.etag, "takenOver");
          }
          continue; // another waiter took it, or its holder renewed just now
        }
        failures = 0;
        const held = decodeBody(cur.body);
        const elapsed = performance.now() - started;
        if (held && held.owner !== first?.owner) {
          first = { owner: held.owner, written: held.written, at: performance.now() };
        } else if (held && first && held.size !== null && held.written > first.written) {
          // The holder's own rate says when it will be done; waiting past
          // the budget anyway would only delay the client's own fetch.
          const span = performance.now() - first.at;
          const eta = (held.size - held.written) / ((held.written - first.written) / span);
          if (span >= 2 * this.renewMs && elapsed + eta > this.maxWaitMs) {
            return unleased(
              `the holder's download needs about ${Math.round(eta)} ms more, past the wait budget`,
            );
          }
        }
      } catch (e) {
        if (opts.signal?.aborted) throw opts.signal.reason ?? e;
        // Ceph RGW answers a racing conditional PUT that lost with 500
        // (measured), not 412: look again before giving up on the store.
        if (++failures >= MAX_STORE_FAILURES) {
          return unleased(`coordination store: ${(e as Error).message}`);
        }
      }
      const elapsed = performance.now() - started;
      if (elapsed >= this.maxWaitMs) {
        return unleased(`waited ${Math.round(elapsed)} ms for another replica's download`);
      }
      // A quarter of the time waited so far: the client loses at most about
      // that much after the commit, and a long wait costs few requests.
      const pause = Math.min(this.#pollMaxMs, Math.max(this.#pollMinMs, elapsed / 4));
      await sleep(Math.min(pause, this.maxWaitMs - elapsed), opts.signal);
    }
  }
}

/** A lease this replica holds: renewed until released. */
export class HeldLease {
  #etag: string;
  #seq = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #renewing: Promise<void> | undefined;
  #stopped = false;
  /** Set when another replica took the lease over (our renewals were too late). */
  lost = false;

  constructor(
    readonly leases: FleetLeases,
    readonly key: string,
    etag: string,
    readonly body: (seq: number) => Uint8Array,
  ) {
    this.#etag = etag;
  }

  /** Starts renewing every `renewMs`. */
  start(): void {
    if (this.#stopped) return;
    const timer = setTimeout(() => {
      this.#renewing = this.#renew().finally(() => {
        this.#renewing = undefined;
        this.start();
      });
    }, this.leases.renewMs);
    // A lease never keeps a process alive on its own.
    Deno.unrefTimer(timer);
    this.#timer = timer;
  }

  async #renew(): Promise<void> {
    if (this.#stopped) return;
    const { store, log, stats } = this.leases;
    try {
      const r = await store.replace(this.key, this.body(++this.#seq), this.#etag);
      if (r === "changed") {
        // Someone judged us dead. Our download goes on (its bytes are
        // verified all the same); the lease is the taker's now.
        this.lost = true;
        this.#stopped = true;
        stats.renewFailures++;
        log.warn("an archive lease was taken over while its download ran", { key: this.key });
        return;
      }
      this.#etag = r.etag;
    } catch (e) {
      // Retried at the next tick; the TTL leaves room for a few misses.
      stats.renewFailures++;
      log.warn("cannot renew an archive lease", { key: this.key, error: (e as Error).message });
    }
  }

  /**
   * Stops renewing and deletes the lease unless it was taken over. Never
   * throws; a second call waits for the first.
   */
  release(): Promise<void> {
    return this.#released ??= this.#release();
  }

  #released: Promise<void> | undefined;

  async #release(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#renewing;
    if (this.lost) return;
    const { store, log } = this.leases;
    // Ceph RGW ignores If-Match on DELETE: a last conditional renewal proves
    // the lease is still ours, and makes it fresh, so nobody can take it over
    // in the moment before the delete (a taker needs it stale).
    try {
      const r = await store.replace(this.key, this.body(++this.#seq), this.#etag);
      if (r === "changed") {
        this.lost = true;
        return;
      }
      this.#etag = r.etag;
    } catch {
      // Unknown whether it is still ours (RGW answers a lost race with 500):
      // a delete might remove a taker's lease. Left to go stale instead.
      return;
    }
    await store.remove(this.key, this.#etag).catch((e) => {
      // Left to go stale: the next replica takes it over after the TTL.
      log.warn("cannot delete an archive lease", {
        key: this.key,
        error: (e as Error).message,
      });
    });
  }
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const t = setTimeout(done, Math.max(0, ms));
    function done() {
      signal?.removeEventListener("abort", done);
      clearTimeout(t);
      if (signal?.aborted) reject(signal.reason);
      else resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}
