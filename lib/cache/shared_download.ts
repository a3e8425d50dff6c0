/**
 * One in-flight archive download and its readers: the writer appends to a
 * temp file (or, as a pass-through, to a small in-memory tail); every reader
 * follows behind it and is held back one byte until the sha256 matched.
 * {@link Downloads} (download.ts) decides when a download starts, where its
 * bytes go and when it is verified.
 * @module
 */
import type { ArchiveMeta } from "./archive_meta.ts";
import type { PackageStore } from "./package_store.ts";

const READ_CHUNK = 256 * 1024;
/**
 * Bytes a pass-through keeps in memory ahead of its slowest client before it
 * stops reading the upstream.
 */
export const PASS_THROUGH_WINDOW = 2 * 2 ** 20;

/** Where a download's bytes come from. */
export interface DownloadSource {
  /** Sends the request; the caller here owns the response body. */
  open(signal: AbortSignal): Promise<{ res: Response; url: URL }>;
  /** The signed sha256 the bytes must have; nothing else is stored. */
  expectedSha256: string;
  /** Aborts the download (server shutdown). */
  signal?: AbortSignal;
}

interface ReaderState {
  pos: number;
}

/** How long a reader that lost the temp file to the commit's rename waits for the commit. */
const COMMIT_WAIT_MS = 10_000;

/** One in-flight archive download, shared by every client that wants it. */
export class Download {
  /** Bytes received from the upstream (and hashed) so far. */
  written = 0;
  /** Size announced by the upstream, when it announced one. */
  expectedSize: number | undefined;
  state: "starting" | "running" | "verified" | "stored" | "failed" = "starting";
  error: Error | undefined;
  /**
   * Set when the bytes stopped going to disk (why): the download is a
   * pass-through from then on and stores nothing.
   */
  passThrough: string | undefined;
  /** Resolves once the upstream answered 200 (rejects if it did not). */
  readonly ready: Promise<void>;
  /** Resolves with the stored archive's meta, or rejects. */
  readonly done: Promise<ArchiveMeta>;
  /** Bytes of the temp file that hold the archive (all of `written` until a pass-through). */
  fileBytes = 0;
  /** Pass-through bytes past `fileBytes` not yet read by every reader. */
  #tail: Uint8Array[] = [];
  /** Offset of `#tail[0]`. */
  #tailStart = 0;
  #tailBytes = 0;
  readonly #readers = new Set<ReaderState>();
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

  /** Clients reading this download now. */
  get readers(): number {
    return this.#readers.size;
  }

  /** Bytes this download takes in the temp area now, or will when complete. */
  get reservedBytes(): number {
    if (this.passThrough !== undefined) return this.fileBytes;
    // A verified archive is being committed: it counts as stored from here.
    if (this.state === "verified" || this.state === "stored") return 0;
    return Math.max(this.expectedSize ?? 0, this.written);
  }

  /** Stops writing to disk: what follows `fileBytes` is kept in memory for the readers. */
  startPassThrough(why: string): void {
    this.passThrough ??= why;
    this.#tailStart = this.fileBytes;
  }

  /** Adds received bytes in pass-through mode (the chunk now belongs to the download). */
  pushTail(chunk: Uint8Array): void {
    this.#tail.push(chunk);
    this.#tailBytes += chunk.length;
  }

  /** Memory held for slow readers (pass-through). */
  get tailBytes(): number {
    return this.#tailBytes;
  }

  /** Drops pass-through bytes every reader has read. */
  trim(): void {
    let min = Infinity;
    for (const r of this.#readers) min = Math.min(min, r.pos);
    while (this.#tail.length > 0 && this.#tailStart + this.#tail[0]!.length <= min) {
      const c = this.#tail.shift()!;
      this.#tailStart += c.length;
      this.#tailBytes -= c.length;
    }
  }

  /**
   * Waits until the readers have taken pass-through bytes (or all left),
   * at most `timeoutMs`.
   * @returns false when no reader is left or they stopped reading
   */
  async waitForReaders(timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    this.trim();
    while (this.#readers.size > 0 && this.#tailBytes > PASS_THROUGH_WINDOW) {
      if (Date.now() >= deadline || signal?.aborted) return false;
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        this.#waitForProgress(),
        new Promise<void>((r) => timer = setTimeout(r, Math.max(0, deadline - Date.now()))),
      ]);
      clearTimeout(timer);
      this.trim();
    }
    return this.#readers.size > 0;
  }

  /**
   * Waits until every reader has finished (or left), at most `timeoutMs`:
   * used before a download that stores nothing ends, since its end fails the
   * readers still attached.
   */
  async waitForReadersGone(timeoutMs: number, signal?: AbortSignal): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.#readers.size > 0 && Date.now() < deadline && !signal?.aborted) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        this.#waitForProgress(),
        new Promise<void>((r) => timer = setTimeout(r, Math.max(0, deadline - Date.now()))),
      ]);
      clearTimeout(timer);
    }
  }

  #tailSlice(pos: number, limit: number): Uint8Array {
    let at = this.#tailStart;
    for (const c of this.#tail) {
      if (pos < at + c.length) {
        const from = pos - at;
        // The tail chunk is never detached, so a view is safe to hand out.
        return c.subarray(from, Math.min(c.length, from + (limit - pos)));
      }
      at += c.length;
    }
    throw new Error("pass-through bytes are no longer held");
  }

  /**
   * A stream of the archive's bytes for one client: what is already written,
   * then the rest as it arrives. Cancelling it (client gone) affects only this
   * reader; the download goes on for the others and for the cache.
   */
  reader(): ReadableStream<Uint8Array> {
    let file: { read(b: Uint8Array): Promise<number | null>; close(): void } | undefined;
    const me: ReaderState = { pos: 0 };
    this.#readers.add(me);
    const close = () => {
      try {
        file?.close();
      } catch { /* already closed */ }
      file = undefined;
      if (this.#readers.delete(me)) this.notify();
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
            if (me.pos < limit) {
              if (this.passThrough !== undefined && me.pos >= this.fileBytes) {
                if (me.pos < this.#tailStart) throw new Error("pass-through bytes are gone");
                const out = this.#tailSlice(me.pos, limit);
                me.pos += out.length;
                this.notify(); // the writer may be waiting for us
                controller.enqueue(out);
                return;
              }
              const fileLimit = this.passThrough !== undefined
                ? Math.min(limit, this.fileBytes)
                : limit;
              if (!file) file = await this.#openForRead();
              const buf = new Uint8Array(Math.min(READ_CHUNK, fileLimit - me.pos));
              const n = await file.read(buf);
              if (n === null || n === 0) throw new Error("temp file ended early");
              me.pos += n;
              controller.enqueue(n === buf.length ? buf : buf.subarray(0, n));
              return;
            }
            if (complete && me.pos >= this.written) {
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
      // Committed between our check and the open. The state says "verified"
      // until the commit returns, but the rename may already have moved the
      // temp file: wait for the commit (bounded), then read the stored copy.
      if (e instanceof Deno.errors.NotFound && this.state === "verified") {
        let timer: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([
          this.done.catch(() => {}),
          new Promise<void>((r) => (timer = setTimeout(r, COMMIT_WAIT_MS))),
        ]);
        clearTimeout(timer);
      }
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
