/**
 * Single-flight archive downloads. A download writes the upstream body to a
 * temp file while hashing it; every client that wants that archive (the first
 * and any late joiner) reads the temp file behind the writer. Readers are
 * held back one byte until the sha256 matched, so no client ever receives a
 * complete wrong archive; the file enters the cache only through
 * {@link PackageStore.commit} after the match.
 *
 * Where the bytes come from is the caller's business ({@link DownloadSource});
 * this module only knows HTTP responses.
 * @module
 */
import { releaseChunk } from "../base/buffers.ts";
import { redactUrl } from "../base/redact.ts";
import type { Logger } from "../base/log.ts";
import { createHash } from "../deps/crypto.ts";
import { dirname } from "../deps/path.ts";
import { UpstreamError, UpstreamTimeoutError } from "../http/errors.ts";
import { checkArchiveHash, IntegrityError } from "../integrity/checks.ts";
import {
  archiveFilename,
  type PlatformRef,
  platformString,
  type ProviderRef,
  providerString,
} from "../protocol/names.ts";
import type { ArchiveMeta } from "./archive_meta.ts";
import type { PackageStore } from "./package_store.ts";
import { DiskError } from "./storage.ts";

const READ_CHUNK = 256 * 1024;
/** An upstream that sends nothing for this long is given up on. */
const DEFAULT_IDLE_TIMEOUT_MS = 60_000;

/** Where a download's bytes come from. */
export interface DownloadSource {
  /** Sends the request; the caller here owns the response body. */
  open(signal: AbortSignal): Promise<{ res: Response; url: URL }>;
  /** The signed sha256 the bytes must have; nothing else is stored. */
  expectedSha256: string;
  /** Aborts the download (server shutdown). */
  signal?: AbortSignal;
}

/** One in-flight archive download, shared by every client that wants it. */
export class Download {
  /** Bytes written to the temp file so far. */
  written = 0;
  /** Size announced by the upstream, when it announced one. */
  expectedSize: number | undefined;
  state: "starting" | "running" | "verified" | "stored" | "failed" = "starting";
  error: Error | undefined;
  /** Resolves once the upstream answered 200 (rejects if it did not). */
  readonly ready: Promise<void>;
  /** Resolves with the stored archive's meta, or rejects. */
  readonly done: Promise<ArchiveMeta>;
  #waiters: Array<() => void> = [];
  #resolveReady!: () => void;
  #rejectReady!: (e: Error) => void;

  constructor(
    readonly tmpPath: string,
    /** The storage key the archive is committed to. */
    readonly key: string,
    readonly packages: PackageStore,
    run: (d: Download) => Promise<ArchiveMeta>,
  ) {
    this.ready = new Promise((res, rej) => {
      this.#resolveReady = res;
      this.#rejectReady = rej;
    });
    this.ready.catch(() => {});
    this.done = run(this).then(
      (m) => {
        this.state = "stored";
        this.notify();
        return m;
      },
      (e: Error) => {
        this.state = "failed";
        this.error = e;
        this.#rejectReady(e);
        this.notify();
        throw e;
      },
    );
    this.done.catch(() => {});
  }

  /** Marks the upstream response as accepted. */
  markReady(expectedSize: number | undefined): void {
    this.expectedSize = expectedSize;
    this.state = "running";
    this.#resolveReady();
  }

  /** Wakes every reader waiting for more bytes or a state change. */
  notify(): void {
    const w = this.#waiters;
    this.#waiters = [];
    for (const f of w) f();
  }

  #waitForProgress(): Promise<void> {
    return new Promise((r) => this.#waiters.push(r));
  }

  /**
   * A stream of the archive's bytes for one client: what is already written,
   * then the rest as it arrives. Cancelling it (client gone) affects only this
   * reader; the download goes on for the others and for the cache.
   */
  reader(): ReadableStream<Uint8Array> {
    let file: { read(b: Uint8Array): Promise<number | null>; close(): void } | undefined;
    let pos = 0;
    const close = () => {
      try {
        file?.close();
      } catch { /* already closed */ }
      file = undefined;
    };
    return new ReadableStream<Uint8Array>({
      pull: async (controller) => {
        try {
          while (true) {
            if (this.state === "failed") throw this.error ?? new Error("download failed");
            const complete = this.state === "verified" || this.state === "stored";
            // Hold back the last byte until the hash matched: a client never
            // holds a complete archive that Repoxy has not verified.
            const limit = complete ? this.written : this.written - 1;
            if (pos < limit) {
              if (!file) file = await this.#openForRead();
              const buf = new Uint8Array(Math.min(READ_CHUNK, limit - pos));
              const n = await file.read(buf);
              if (n === null || n === 0) throw new Error("temp file ended early");
              pos += n;
              controller.enqueue(n === buf.length ? buf : buf.subarray(0, n));
              return;
            }
            if (complete && pos >= this.written) {
              close();
              controller.close();
              return;
            }
            await this.#waitForProgress();
          }
        } catch (e) {
          close();
          throw e;
        }
      },
      cancel: () => close(),
    }, { highWaterMark: 0 });
  }

  async #openForRead(): Promise<{ read(b: Uint8Array): Promise<number | null>; close(): void }> {
    try {
      const file = await Deno.open(this.tmpPath, { read: true });
      // Tells `repoxy prune` in another process that this archive is being
      // read (the lock stays with the inode once it is committed).
      await file.tryLock(false).catch(() => false);
      return file;
    } catch (e) {
      // Committed between our check and the open.
      if (e instanceof Deno.errors.NotFound && this.state === "stored") {
        const object = await this.packages.storage.open(this.key);
        if (object) {
          await object.markServing();
          return object;
        }
      }
      throw e;
    }
  }
}

/** Options of {@link Downloads}. */
export interface DownloadsOptions {
  /** Idle timeout of a download, in ms (default 60 s). */
  idleTimeoutMs?: number;
  now?: () => number;
}

/** The downloads in flight: at most one per archive. */
export class Downloads {
  readonly #downloads = new Map<string, Download>();

  constructor(
    readonly packages: PackageStore,
    readonly log: Logger,
    readonly opts: DownloadsOptions = {},
  ) {}

  /** The in-flight download of an archive, if any. */
  inflight(p: ProviderRef, version: string, pl: PlatformRef): Download | undefined {
    return this.#downloads.get(this.packages.keyOf(p, version, pl));
  }

  /** Number of downloads in progress. */
  get count(): number {
    return this.#downloads.size;
  }

  /** Starts (or joins) the download of an archive. */
  start(p: ProviderRef, version: string, pl: PlatformRef, source: DownloadSource): Download {
    const key = this.packages.keyOf(p, version, pl);
    const existing = this.#downloads.get(key);
    if (existing) return existing;
    const tmp = this.packages.storage.tempPath(archiveFilename(p.type, version, pl));
    const d = new Download(tmp, key, this.packages, (d) => this.#run(d, p, version, pl, source));
    this.#downloads.set(key, d);
    d.done.finally(() => this.#downloads.delete(key)).catch(() => {});
    return d;
  }

  async #run(
    d: Download,
    p: ProviderRef,
    version: string,
    pl: PlatformRef,
    source: DownloadSource,
  ): Promise<ArchiveMeta> {
    const idleMs = this.opts.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
    const abort = new AbortController();
    let idleTimer = setTimeout(() => abort.abort(new DOMException("idle", "TimeoutError")), idleMs);
    const bump = () => {
      clearTimeout(idleTimer);
      idleTimer = setTimeout(() => abort.abort(new DOMException("idle", "TimeoutError")), idleMs);
    };
    const signal = source.signal ? AbortSignal.any([abort.signal, source.signal]) : abort.signal;
    let file: Deno.FsFile | undefined;
    const started = Date.now();
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
      try {
        file = await Deno.open(d.tmpPath, { write: true, createNew: true });
      } catch (e) {
        await res.body?.cancel();
        throw new DiskError(
          `cannot create a temp file in ${dirname(d.tmpPath)}: ${(e as Error).message}`,
        );
      }
      d.markReady(expected);
      const hash = createHash("sha256");
      try {
        for await (const chunk of res.body ?? new ReadableStream<Uint8Array>()) {
          bump();
          hash.update(chunk);
          let off = 0;
          while (off < chunk.length) off += await file.write(chunk.subarray(off));
          d.written += chunk.length;
          d.notify();
          releaseChunk(chunk); // readers read the temp file, never this chunk
        }
      } catch (e) {
        if (signal.aborted) {
          const reason = signal.reason;
          if (reason instanceof DOMException && reason.name === "TimeoutError") {
            throw new UpstreamTimeoutError(`download from ${url.host} stalled for ${idleMs} ms`);
          }
        }
        throw new UpstreamError(`download from ${url.host} broke off: ${(e as Error).message}`);
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
      d.state = "verified";
      d.notify();
      await file.syncData();
      file.close();
      file = undefined;
      const meta: ArchiveMeta = {
        sha256,
        size: d.written,
        cachedAt: (this.opts.now ?? Date.now)(),
        url: url.href,
      };
      await this.packages.commit(p, version, pl, d.tmpPath, meta);
      this.log.info("archive cached", {
        path: this.packages.storage.locate(d.key),
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
      await Deno.remove(d.tmpPath).catch(() => {});
      // Said here too: the clients may all have left, and the access log
      // only knows about the ones still attached.
      this.log.warn("archive download failed; nothing cached", {
        path: this.packages.storage.locate(d.key),
        written: d.written,
        error: (e as Error).message,
      });
      throw e;
    } finally {
      clearTimeout(idleTimer);
    }
  }

  /** Waits for all in-flight downloads (used at shutdown and in tests). */
  async settle(): Promise<void> {
    await Promise.allSettled([...this.#downloads.values()].map((d) => d.done));
  }
}
