/**
 * Single-flight archive downloads. A download writes the upstream body to a
 * temp file while hashing it; every client that wants that archive (the first
 * and any late joiner) reads the temp file behind the writer. Readers are
 * held back one byte until the sha256 matched, so no client ever receives a
 * complete wrong archive; the file enters the cache only through
 * {@link PackageStore.commit} after the match.
 *
 * Every transfer is bounded: a Content-Length over `limits.archiveSize` is
 * refused before a byte is written, a body that runs past it is cut at the
 * bound, and a body slower than `limits.minTransferRate` over a
 * `limits.transferRateWindow` is given up on.
 *
 * When the bytes cannot (or may not) go to disk — the disk is full or failing
 * ({@link DiskHealth}), or the archive does not fit in `maxCacheSize` next to
 * the other downloads in flight — the download turns into a pass-through: the
 * rest of the body goes to the attached clients through a small in-memory
 * window (the upstream is read only as fast as the slowest of them), with the
 * same held-back last byte, and nothing is stored.
 *
 * Where the bytes come from is the caller's business ({@link DownloadSource});
 * this module only knows HTTP responses.
 * @module
 */
import { releaseChunk } from "../base/buffers.ts";
import { span, traced } from "../base/trace.ts";
import { redactUrl } from "../base/redact.ts";
import type { Logger } from "../base/log.ts";
import { createHash } from "../deps/crypto.ts";
import { dirname } from "../deps/path.ts";
import { HttpError, UpstreamError, UpstreamTimeoutError } from "../http/errors.ts";
import { checkArchiveHash, IntegrityError } from "../integrity/checks.ts";
import {
  archiveFilename,
  type PlatformRef,
  platformString,
  type ProviderRef,
  providerString,
} from "../protocol/names.ts";
import type { ArchiveMeta } from "./archive_meta.ts";
import { type DiskHealth, isDiskTrouble } from "./disk_health.ts";
import type { FleetLeases, HeldLease } from "./fleet_lease.ts";
import type { PackageStore } from "./package_store.ts";
import { Download, type DownloadSource, PASS_THROUGH_WINDOW } from "./shared_download.ts";
import {
  DEFAULT_TRANSFER_LIMITS,
  type TransferLimits,
  TransferWatchdog,
} from "./transfer_watchdog.ts";

export type { TransferLimits };
export { Download, type DownloadSource };

/** An upstream that sends nothing for this long is given up on. */
const DEFAULT_IDLE_TIMEOUT_MS = 60_000;
/**
 * Uncached transfers at once while the disk is failed: each holds up to
 * {@link PASS_THROUGH_WINDOW} and its own upstream download (they cannot be
 * shared), so this bounds that memory (64 MiB) and upstream load.
 */
export const MAX_PASS_THROUGHS = 32;
/** Options of {@link Downloads}. */
export interface DownloadsOptions {
  /** Idle timeout of a download, in ms (default 60 s). */
  idleTimeoutMs?: number;
  now?: () => number;
  /** Size and rate bounds (default: the config defaults). */
  limits?: TransferLimits;
  /** The disk's state: failed means pass-through, and write errors fail it. */
  health: DiskHealth;
  /** `maxCacheSize`: temp space of downloads in flight counts inside it. */
  maxCacheBytes?: number;
  /** Asked to make room (prune) when downloads reserve more temp space. */
  onReserve?: () => void;
  /**
   * Leases on a storage shared by replicas: one replica fetches each archive,
   * the others serve its commit. Absent on a local disk (nothing to coordinate).
   */
  fleet?: FleetLeases | undefined;
}

/** The downloads in flight: at most one per archive. */
export class Downloads {
  readonly #downloads = new Map<string, Download>();
  /** Every download running, joinable or not (pass-throughs leave the map). */
  readonly #running = new Set<Download>();

  constructor(
    readonly packages: PackageStore,
    readonly log: Logger,
    readonly opts: DownloadsOptions,
  ) {}

  /** The in-flight download of an archive, if any. */
  inflight(p: ProviderRef, version: string, pl: PlatformRef): Download | undefined {
    return this.#downloads.get(this.packages.keyOf(p, version, pl));
  }

  /** Downloads started while the disk was failed: pass-throughs from their first byte. */
  readonly #startedUncached = new WeakSet<Download>();

  /** Number of running downloads that cache nothing (pass-throughs, or about to be). */
  get passThroughs(): number {
    let n = 0;
    for (const d of this.#running) {
      if (d.passThrough !== undefined || this.#startedUncached.has(d)) n++;
    }
    return n;
  }

  /** Number of downloads in progress. */
  get count(): number {
    return this.#running.size;
  }

  /**
   * Temp space the downloads in flight hold or will hold: each its declared
   * size, or what it has written when it declared none.
   */
  get reservedBytes(): number {
    let n = 0;
    for (const d of this.#running) n += d.reservedBytes;
    return n;
  }

  /**
   * Starts (or joins) the download of an archive.
   * @throws {HttpError} 503 when the disk is failed and {@link MAX_PASS_THROUGHS} uncached
   * transfers already run
   */
  start(p: ProviderRef, version: string, pl: PlatformRef, source: DownloadSource): Download {
    const key = this.packages.keyOf(p, version, pl);
    const existing = this.#downloads.get(key);
    if (existing) return existing;
    if (!this.opts.health.ok && this.passThroughs >= MAX_PASS_THROUGHS) {
      throw new HttpError(
        503,
        `the cache disk is unavailable (${this.opts.health.reason}) and ${MAX_PASS_THROUGHS} uncached transfers are running; try again shortly`,
        { "retry-after": "5" },
      );
    }
    const tmp = this.packages.storage.tempPath(archiveFilename(p.type, version, pl));
    // Traced as one span (the upstream requests, body and commit nest in it).
    const d = new Download(tmp, key, this.packages, (d) =>
      traced(
        "archive download",
        { key },
        () => this.#run(d, p, version, pl, source),
        (m) => ({ bytes: m.size }),
      ));
    if (!this.opts.health.ok) this.#startedUncached.add(d);
    this.#downloads.set(key, d);
    this.#running.add(d);
    d.done.finally(() => {
      if (this.#downloads.get(key) === d) this.#downloads.delete(key);
      this.#running.delete(d);
    }).catch(() => {});
    return d;
  }

  /** Turns `d` into a pass-through: no late joiner could get its first bytes any more. */
  #passThrough(d: Download, why: string): void {
    if (d.passThrough !== undefined) return;
    d.startPassThrough(why);
    if (this.#downloads.get(d.key) === d) this.#downloads.delete(d.key);
    // It will store nothing: another replica may fetch (and store) it now.
    this.#leases.get(d)?.release();
  }

  /** Fleet leases held by running downloads. */
  readonly #leases = new WeakMap<Download, HeldLease>();

  /** Whether `need` more bytes of temp space fit in `maxCacheSize` beside the other downloads. */
  #fits(d: Download, total: number): boolean {
    const max = this.opts.maxCacheBytes;
    if (max === undefined) return true;
    return this.reservedBytes - d.reservedBytes + total <= max;
  }

  async #run(
    d: Download,
    p: ProviderRef,
    version: string,
    pl: PlatformRef,
    source: DownloadSource,
  ): Promise<ArchiveMeta> {
    const fleet = this.opts.fleet;
    if (!fleet) return await this.#fetch(d, p, version, pl, source);
    const got = await fleet.acquire(d.key, {
      committed: () => this.#committed(p, version, pl, d.key, source.expectedSha256),
      progress: () => ({ written: d.written, size: d.expectedSize }),
      signal: source.signal,
    });
    if (got.kind === "committed") {
      // Another replica stored it: the readers open the stored copy (the
      // temp file never exists; see Download's reader).
      d.written = d.fileBytes = got.meta.size;
      d.markReady(got.meta.size);
      d.state = "verified";
      return got.meta;
    }
    if (got.kind === "held") this.#leases.set(d, got.lease);
    try {
      return await this.#fetch(d, p, version, pl, source);
    } finally {
      // After the commit (or the failure): a waiter finds the archive, or
      // no lease and takes the next turn at once.
      if (got.kind === "held") await got.lease.release();
    }
  }

  /** The archive's record when it is in storage with the signed sha256, else undefined. */
  async #committed(
    p: ProviderRef,
    version: string,
    pl: PlatformRef,
    key: string,
    sha256: string,
  ): Promise<ArchiveMeta | undefined> {
    // The record is written before the object: an object with a matching
    // record is a finished commit.
    const info = await this.packages.storage.stat(key);
    if (!info) return undefined;
    const meta = await this.packages.readMeta(p, version, pl);
    return meta && meta.size === info.size && meta.sha256 === sha256.toLowerCase()
      ? meta
      : undefined;
  }

  async #fetch(
    d: Download,
    p: ProviderRef,
    version: string,
    pl: PlatformRef,
    source: DownloadSource,
  ): Promise<ArchiveMeta> {
    const idleMs = this.opts.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
    const limits = this.opts.limits ?? DEFAULT_TRANSFER_LIMITS;
    const health = this.opts.health;
    const abort = new AbortController();
    const stall = (why: string) => abort.abort(new DOMException(why, "TimeoutError"));
    // Time spent waiting for slow clients (pass-through) does not count
    // against the upstream: the watchdog is paused then.
    const watch = new TransferWatchdog(idleMs, limits, stall);
    const signal = source.signal ? AbortSignal.any([abort.signal, source.signal]) : abort.signal;
    let file: Deno.FsFile | undefined;
    const started = Date.now();
    const where = this.packages.storage.locate(d.key);
    try {
      const { res, url } = await source.open(signal);
      if (res.status !== 200) {
        await res.body?.cancel();
        throw new UpstreamError(
          `download host ${url.host} answered ${res.status} for ${url.pathname}`,
        );
      }
      const lenHeader = res.headers.get("content-length");
      const expected =
        lenHeader !== null && /^\d+$/.test(lenHeader) && !res.headers.has("content-encoding")
          ? Number(lenHeader)
          : undefined;
      if (expected !== undefined && expected > limits.archiveBytes) {
        await res.body?.cancel();
        throw new UpstreamError(
          `download host ${url.host} announced ${expected} bytes for ${url.pathname}, over the archive size limit of ${limits.archiveBytes}`,
        );
      }
      // Why the bytes cannot go to disk from the start, if they cannot.
      let bypass: string | undefined;
      let diskTrouble = false;
      if (!health.ok) {
        bypass = `cache disk unavailable: ${health.reason}`;
        diskTrouble = true;
      } else if (expected !== undefined && !this.#fits(d, expected)) {
        bypass =
          `${expected} bytes do not fit in maxCacheSize ${this.opts.maxCacheBytes} next to the downloads in flight`;
      }
      if (bypass === undefined) {
        try {
          file = await Deno.open(d.tmpPath, { write: true, createNew: true });
        } catch (e) {
          bypass = `cannot create a temp file in ${dirname(d.tmpPath)}: ${(e as Error).message}`;
          diskTrouble = true;
          health.fail(bypass, expected ?? 1);
        }
      }
      if (bypass !== undefined) {
        this.#passThrough(d, bypass);
        if (diskTrouble) this.#logDiskBypass(where, bypass);
        else {this.log.warn("archive passed through without caching", {
            path: where,
            reason: bypass,
          });}
      }
      d.markReady(expected);
      if (file) this.opts.onReserve?.();
      const hash = createHash("sha256");
      let reservedStep = 0;
      watch.startWindow();
      try {
        for await (const chunk of res.body ?? new ReadableStream<Uint8Array>()) {
          watch.tick(chunk.length);
          if (d.written + chunk.length > limits.archiveBytes) {
            throw new UpstreamError(
              `download from ${url.host} ran past the archive size limit of ${limits.archiveBytes} bytes`,
            );
          }
          hash.update(chunk);
          if (file && expected === undefined && !this.#fits(d, d.written + chunk.length)) {
            // A body without a declared size outgrew the quota: the clients
            // still get it, the cache does not.
            this.#passThrough(d, `grew past maxCacheSize ${this.opts.maxCacheBytes}`);
            this.log.warn("archive passed through without caching", {
              path: where,
              reason: d.passThrough,
            });
          }
          if (file && d.passThrough === undefined) {
            let off = 0;
            try {
              while (off < chunk.length) off += await file.write(chunk.subarray(off));
            } catch (e) {
              if (!isDiskTrouble(e)) throw e;
              // Disk trouble costs caching, not service: the bytes that made
              // it to the file stay readable there, the rest goes through
              // memory. (A partial write leaves `off` good bytes.)
              d.fileBytes += off;
              const why = `writing ${dirname(d.tmpPath)} failed: ${(e as Error).message}`;
              health.fail(why, Math.max(expected ?? 0, d.written + chunk.length));
              this.#passThrough(d, why);
              this.#logDiskBypass(where, why);
              const rest = chunk.slice(off);
              d.written += off;
              d.pushTail(rest);
              d.written += rest.length;
              d.notify();
              continue;
            }
            d.written += chunk.length;
            d.fileBytes = d.written;
            d.notify();
            releaseChunk(chunk); // readers read the temp file, never this chunk
            if (expected === undefined && d.written - reservedStep >= 8 * 2 ** 20) {
              reservedStep = d.written;
              this.opts.onReserve?.();
            }
          } else {
            if (d.passThrough === undefined) this.#passThrough(d, "not cached");
            d.pushTail(chunk);
            d.written += chunk.length;
            d.notify();
            d.trim();
            if (d.tailBytes > PASS_THROUGH_WINDOW) {
              watch.pause();
              const someone = await d.waitForReaders(idleMs, signal);
              watch.resume();
              if (!someone) {
                throw new UpstreamError(
                  "the clients of a pass-through download left or stopped reading",
                );
              }
            } else if (d.readers === 0) {
              throw new UpstreamError("every client left a pass-through download");
            }
          }
        }
      } catch (e) {
        if (signal.aborted) {
          const reason = signal.reason;
          if (reason instanceof DOMException && reason.name === "TimeoutError") {
            throw new UpstreamTimeoutError(`download from ${url.host} ${reason.message}`);
          }
        }
        if (e instanceof UpstreamError) throw e;
        throw new UpstreamError(`download from ${url.host} broke off: ${(e as Error).message}`);
      } finally {
        watch.stopWindow();
      }
      if (expected !== undefined && d.written !== expected) {
        throw new UpstreamError(
          `download from ${url.host} ended after ${d.written} of ${expected} bytes`,
        );
      }
      const sha256 = hash.digest("hex");
      try {
        checkArchiveHash(sha256, source.expectedSha256);
      } catch (e) {
        if (!(e instanceof IntegrityError)) throw e;
        this.log.error("archive checksum mismatch; not cached", {
          provider: providerString(p),
          version,
          platform: platformString(pl),
          url: redactUrl(url),
          expected: source.expectedSha256.toLowerCase(),
          got: sha256,
        });
        throw new UpstreamError(`archive from ${url.host} ${e.message}`);
      }
      const meta: ArchiveMeta = {
        sha256,
        size: d.written,
        cachedAt: (this.opts.now ?? Date.now)(),
        url: url.href,
      };
      // Verified: the readers get their last byte.
      d.state = "verified";
      d.notify();
      if (d.passThrough !== undefined || !file) {
        // Nothing to store; ending the download now would cut the readers.
        await d.waitForReadersGone(idleMs, source.signal);
        throw new PassedThrough(d.passThrough ?? "not cached");
      }
      try {
        const synced = span("archive fsync+commit", { bytes: d.written });
        await file.syncData();
        file.close();
        file = undefined;
        await this.packages.commit(p, version, pl, d.tmpPath, meta);
        synced();
      } catch (e) {
        if (!isDiskTrouble(e)) throw e;
        // The bytes are verified and in the temp file: let the readers
        // finish from it, then give up on storing them.
        health.fail(`storing the archive failed: ${(e as Error).message}`, d.written);
        await d.waitForReadersGone(idleMs, source.signal);
        throw e;
      }
      this.log.info("archive cached", {
        path: where,
        bytes: d.written,
        ms: Date.now() - started,
      });
      // h1 needs the whole zip; compute it now that it is in place.
      this.packages.ensureH1(p, version, pl).catch(() => {});
      return meta;
    } catch (e) {
      try {
        file?.close();
      } catch { /* closed */ }
      // Readers still reading the temp file keep its inode open.
      await Deno.remove(d.tmpPath).catch(() => {});
      if (!(e instanceof PassedThrough)) {
        // Said here too: the clients may all have left, and the access log
        // only knows about the ones still attached.
        this.log.warn("archive download failed; nothing cached", {
          path: where,
          written: d.written,
          error: (e as Error).message,
        });
      }
      throw e;
    } finally {
      watch.stop();
    }
  }

  #logDiskBypass(path: string, error: string): void {
    this.log.error("cache not writable; streaming the archive without caching it", {
      path,
      error,
    });
  }

  /** Waits for all in-flight downloads (used at shutdown and in tests). */
  async settle(): Promise<void> {
    await Promise.allSettled([...this.#running].map((d) => d.done));
  }
}

/** A verified pass-through ended: the clients got the archive, the cache did not. */
export class PassedThrough extends Error {
  override name = "PassedThrough";
}
