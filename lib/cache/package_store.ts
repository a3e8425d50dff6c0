/**
 * The `packages/` half of the cache: provider archives in the layout that
 * `terraform providers mirror` writes, plus single-flight downloads.
 *
 * A download writes the upstream body to a temp file in `tmp/` while hashing
 * it; every client that wants that archive (the first and any late joiner)
 * reads the temp file behind the writer. Readers are held back one byte until
 * the sha256 matched, so no client ever receives a complete wrong archive; the
 * file enters `packages/` only by rename after the match.
 * @module
 */
import { syncDir, tempPath } from "./atomic_write.ts";
import { releaseChunk } from "../base/buffers.ts";
import { createHash } from "../deps/crypto.ts";
import { dirname, join } from "../deps/path.ts";
import { hashZipH1 } from "../integrity/dirhash.ts";
import { UpstreamError, UpstreamTimeoutError } from "../http/errors.ts";
import { DiskError } from "./storage.ts";
import type { Logger } from "../base/log.ts";
import { type ArchiveMeta, encodeArchiveMeta, parseArchiveMeta } from "./archive_meta.ts";
import { refKeys } from "./refs_store.ts";
import { archiveFilename, type PlatformRef, type ProviderRef } from "../protocol/names.ts";
import type { RefEntry, RefsStore } from "./refs_store.ts";
import type { UpstreamClient } from "../upstream/client.ts";

/** An open cached archive. The caller must close `file` (or hand it to a Response). */
export interface OpenArchive {
  file: Deno.FsFile;
  size: number;
  mtime: Date | null;
  /** Last recorded access (LRU eviction, see quota.ts). */
  atime: Date | null;
  meta: ArchiveMeta;
}

const READ_CHUNK = 256 * 1024;
/** An upstream that sends nothing for this long is given up on. */
const DEFAULT_IDLE_TIMEOUT_MS = 60_000;

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
    readonly finalPath: string,
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
    let file: Deno.FsFile | undefined;
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
              if (!file) {
                file = await this.#openForRead();
                // Tells `repoxy prune` in another process that this archive is being read.
                await file.tryLock(false).catch(() => false);
              }
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

  async #openForRead(): Promise<Deno.FsFile> {
    try {
      return await Deno.open(this.tmpPath, { read: true });
    } catch (e) {
      // Renamed into packages/ between our check and the open.
      if (e instanceof Deno.errors.NotFound && this.state === "stored") {
        return await Deno.open(this.finalPath, { read: true });
      }
      throw e;
    }
  }
}

/**
 * Passes an upstream body through while hashing it, holding back the last
 * chunk until the sha256 matched (used when the cache cannot be written: the
 * client still never receives a complete archive that failed the check).
 */
export function verifyingStream(
  body: ReadableStream<Uint8Array>,
  expectedSha256: string,
): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  const hash = createHash("sha256");
  let pending: Uint8Array | undefined;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      while (true) {
        const { value, done } = await reader.read();
        if (done) {
          const got = hash.digest("hex");
          if (got !== expectedSha256.toLowerCase()) {
            controller.error(
              new UpstreamError(`archive does not match the upstream checksum (got sha256 ${got})`),
            );
            return;
          }
          if (pending) controller.enqueue(pending);
          controller.close();
          return;
        }
        hash.update(value);
        const out = pending;
        pending = value;
        if (out) {
          controller.enqueue(out);
          return;
        }
      }
    },
    cancel: (reason) => reader.cancel(reason),
  }, { highWaterMark: 0 });
}

/** Stores, opens and downloads provider archives. */
export class PackageStore {
  readonly root: string;
  readonly #downloads = new Map<string, Download>();
  readonly #h1Jobs = new Map<string, Promise<string | undefined>>();
  /** Keyed by the refs entry object, so a rewritten entry is parsed afresh. */
  readonly #parsedMeta = new WeakMap<RefEntry, ArchiveMeta>();

  constructor(
    cacheDir: string,
    readonly tmpDir: string,
    readonly refs: RefsStore,
    readonly log: Logger,
    readonly opts: {
      idleTimeoutMs?: number;
      now?: () => number;
      /** Called after an archive entered `packages/` (keeps the inventory current). */
      onStored?: (p: ProviderRef, version: string, pl: PlatformRef, size: number) => void;
    } = {},
  ) {
    this.root = join(cacheDir, "packages");
  }

  /** Path of an archive in the packed mirror layout. */
  pathOf(p: ProviderRef, version: string, pl: PlatformRef): string {
    return join(this.root, p.hostname, p.namespace, p.type, archiveFilename(p.type, version, pl));
  }

  /** Recorded meta of a stored archive (parsed once per stored entry; treat as read-only). */
  async meta(p: ProviderRef, version: string, pl: PlatformRef): Promise<ArchiveMeta | undefined> {
    const e = await this.refs.get(refKeys.archive(p, version, pl));
    if (!e) return undefined;
    let meta = this.#parsedMeta.get(e);
    if (!meta) {
      meta = parseArchiveMeta(e.body);
      if (!meta) return undefined;
      this.#parsedMeta.set(e, meta);
    }
    return meta;
  }

  /**
   * Opens a cached archive, or returns undefined when it is not (validly)
   * cached. Opens first and stats the handle, so the size always belongs to
   * the bytes that will be read.
   */
  async open(p: ProviderRef, version: string, pl: PlatformRef): Promise<OpenArchive | undefined> {
    const meta = await this.meta(p, version, pl);
    if (!meta) return undefined;
    let file: Deno.FsFile;
    try {
      file = await Deno.open(this.pathOf(p, version, pl), { read: true });
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return undefined;
      throw e;
    }
    try {
      const st = await file.stat();
      if (!st.isFile || st.size !== meta.size) {
        file.close();
        this.log.warn("cached archive does not match its recorded size; fetching again", {
          path: this.pathOf(p, version, pl),
          size: st.size,
          expected: meta.size,
        });
        return undefined;
      }
      return { file, size: st.size, mtime: st.mtime, atime: st.atime, meta };
    } catch (e) {
      file.close();
      throw e;
    }
  }

  /** The in-flight download of an archive, if any. */
  inflight(p: ProviderRef, version: string, pl: PlatformRef): Download | undefined {
    return this.#downloads.get(this.pathOf(p, version, pl));
  }

  /** Number of downloads in progress. */
  get inflightCount(): number {
    return this.#downloads.size;
  }

  /**
   * Starts (or joins) the download of an archive from an upstream-named URL.
   *
   * @param expectedSha256 the upstream `shasum`; the archive is stored only if it matches
   */
  fetch(
    p: ProviderRef,
    version: string,
    pl: PlatformRef,
    source: { client: UpstreamClient; url: URL; expectedSha256: string; signal?: AbortSignal },
  ): Download {
    const finalPath = this.pathOf(p, version, pl);
    const existing = this.#downloads.get(finalPath);
    if (existing) return existing;
    const tmp = tempPath(this.tmpDir, archiveFilename(p.type, version, pl));
    const d = new Download(tmp, finalPath, (d) => this.#run(d, p, version, pl, source));
    this.#downloads.set(finalPath, d);
    d.done.finally(() => this.#downloads.delete(finalPath)).catch(() => {});
    return d;
  }

  async #run(
    d: Download,
    p: ProviderRef,
    version: string,
    pl: PlatformRef,
    source: { client: UpstreamClient; url: URL; expectedSha256: string; signal?: AbortSignal },
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
      const { res, url } = await source.client.get(source.url, {
        signal,
        accept: "application/zip, */*",
      });
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
        throw new DiskError(`cannot create a temp file in ${this.tmpDir}: ${(e as Error).message}`);
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
      if (sha256 !== source.expectedSha256.toLowerCase()) {
        this.log.error("archive checksum mismatch; not cached", {
          provider: `${p.hostname}/${p.namespace}/${p.type}`,
          version,
          platform: `${pl.os}_${pl.arch}`,
          url: url.href,
          expected: source.expectedSha256.toLowerCase(),
          got: sha256,
        });
        throw new UpstreamError(
          `archive from ${url.host} does not match the upstream checksum (expected sha256 ${source.expectedSha256.toLowerCase()}, got ${sha256})`,
        );
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
      // Meta first: a crash between the two leaves meta without a file, which
      // reads as "not cached"; never a file that nothing vouches for.
      await this.refs.put(refKeys.archive(p, version, pl), {
        fetchedAt: meta.cachedAt,
        url: url.href,
        body: encodeArchiveMeta(meta),
      });
      await Deno.mkdir(dirname(d.finalPath), { recursive: true });
      await Deno.rename(d.tmpPath, d.finalPath);
      await syncDir(dirname(d.finalPath));
      this.opts.onStored?.(p, version, pl, d.written);
      this.log.info("archive cached", {
        path: d.finalPath,
        bytes: d.written,
        ms: Date.now() - started,
      });
      // h1 needs the whole zip; compute it now that it is in place.
      this.ensureH1(p, version, pl).catch(() => {});
      return meta;
    } catch (e) {
      try {
        file?.close();
      } catch { /* closed */ }
      await Deno.remove(d.tmpPath).catch(() => {});
      // Said here too: the clients may all have left, and the access log
      // only knows about the ones still attached.
      this.log.warn("archive download failed; nothing cached", {
        path: d.finalPath,
        written: d.written,
        error: (e as Error).message,
      });
      throw e;
    } finally {
      clearTimeout(idleTimer);
    }
  }

  /**
   * Computes and records the archive's `h1:` if it is cached and lacks one.
   * Returns the h1 (or undefined when the archive is not cached).
   */
  ensureH1(p: ProviderRef, version: string, pl: PlatformRef): Promise<string | undefined> {
    const path = this.pathOf(p, version, pl);
    const running = this.#h1Jobs.get(path);
    if (running) return running;
    const job = (async () => {
      const meta = await this.meta(p, version, pl);
      if (!meta) return undefined;
      if (meta.h1) return meta.h1;
      const h1 = await hashZipH1(path);
      const updated: ArchiveMeta = { ...meta, h1 };
      await this.refs.put(refKeys.archive(p, version, pl), {
        fetchedAt: meta.cachedAt,
        url: meta.url,
        body: encodeArchiveMeta(updated),
      });
      return h1;
    })();
    this.#h1Jobs.set(path, job);
    job.finally(() => this.#h1Jobs.delete(path)).catch((e) => {
      this.log.warn("cannot compute h1 of cached archive", { path, error: (e as Error).message });
    });
    return job;
  }

  /** Waits for all in-flight downloads (used at shutdown and in tests). */
  async settle(): Promise<void> {
    await Promise.allSettled([...this.#downloads.values()].map((d) => d.done));
    await Promise.allSettled([...this.#h1Jobs.values()]);
  }
}
