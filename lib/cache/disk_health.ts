/**
 * Whether the cache's disk can take downloads. A download that hits ENOSPC or
 * EIO (or cannot create its temp file) marks the disk failed; from then on new
 * archive requests are served as verified pass-through, `/-/readyz` answers
 * 503 with the reason, and a recovery probe writes a small file in the temp
 * area every few seconds until it succeeds, which makes the disk healthy
 * again without a restart.
 * @module
 */
import type { Logger } from "../base/log.ts";
import type { Storage } from "./storage.ts";

/** Options of {@link DiskHealth}. */
export interface DiskHealthOptions {
  /** Time between recovery probes while failed (default 5 s). */
  probeIntervalMs?: number;
  /**
   * Largest probe write. The probe writes as many bytes as the failed
   * download needed, up to this (default 8 MiB): a 1-byte probe would pass
   * as soon as the failed temp file was removed, and the next download would
   * hit the same wall.
   */
  maxProbeBytes?: number;
  /** The cache directory, for messages. */
  cacheDir?: string;
}

const DEFAULT_PROBE_INTERVAL_MS = 5_000;
const DEFAULT_MAX_PROBE_BYTES = 8 * 2 ** 20;
const PROBE_CHUNK = 256 * 1024;

/** True for the errors that mean "the disk", not "this file": full, I/O error, read-only, gone. */
export function isDiskTrouble(e: unknown): boolean {
  if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.PermissionDenied) return true;
  const code = (e as { code?: string } | null)?.code;
  if (code && ["ENOSPC", "EIO", "EROFS", "EDQUOT", "ENOENT", "EACCES"].includes(code)) return true;
  const msg = String((e as Error | null)?.message ?? "");
  return /No space left|Input\/output error|Read-only file system|Disk quota exceeded|os error (28|5|30|122)\b/
    .test(msg);
}

/** The disk's state, shared by downloads and `/-/readyz`. */
export class DiskHealth {
  #reason: string | undefined;
  #need = 1;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #probing: Promise<boolean> | undefined;
  #closed = false;

  constructor(
    readonly storage: Storage,
    readonly log: Logger,
    readonly opts: DiskHealthOptions = {},
  ) {}

  /** Whether downloads may write to the cache. */
  get ok(): boolean {
    return this.#reason === undefined;
  }

  /** Why the disk is considered failed, if it is. */
  get reason(): string | undefined {
    return this.#reason;
  }

  /**
   * Marks the disk failed and starts the recovery probe.
   * @param need bytes the failed write needed (the probe writes up to that many)
   */
  fail(reason: string, need = 1): void {
    if (this.#closed) return;
    const first = this.#reason === undefined;
    this.#reason = reason;
    this.#need = Math.max(this.#need, need, 1);
    if (first) {
      this.log.error("cache disk failed; archives are passed through uncached until it recovers", {
        reason,
      });
    }
    this.#schedule();
  }

  #schedule(): void {
    if (this.#timer !== undefined || this.#closed) return;
    this.#timer = setTimeout(async () => {
      this.#timer = undefined;
      if (!(await this.probe())) this.#schedule();
    }, this.opts.probeIntervalMs ?? DEFAULT_PROBE_INTERVAL_MS);
    // The probe must not keep a finished process alive.
    Deno.unrefTimer(this.#timer);
  }

  /**
   * Writes, fsyncs and removes a probe file in the temp area. Success clears
   * a failure; failure records one. Returns whether the disk is healthy.
   */
  probe(): Promise<boolean> {
    this.#probing ??= this.#probe().finally(() => this.#probing = undefined);
    return this.#probing;
  }

  async #probe(): Promise<boolean> {
    const failed = this.#reason !== undefined;
    const size = failed
      ? Math.min(this.#need, this.opts.maxProbeBytes ?? DEFAULT_MAX_PROBE_BYTES)
      : 1;
    let path: string | undefined;
    try {
      path = this.storage.tempPath(".probe");
      using f = await Deno.open(path, { write: true, createNew: true });
      const block = new Uint8Array(Math.min(size, PROBE_CHUNK)).fill(0x72);
      for (let left = size; left > 0;) {
        const n = await f.write(block.subarray(0, Math.min(left, block.length)));
        left -= n;
      }
      await f.syncData();
    } catch (e) {
      if (path) await Deno.remove(path).catch(() => {});
      const where = this.opts.cacheDir
        ? `cache directory ${this.opts.cacheDir}`
        : "cache directory";
      const reason = `${where} is not writable: ${(e as Error).message}`;
      if (!this.#closed) this.fail(reason);
      return false;
    }
    await Deno.remove(path).catch(() => {});
    if (failed && this.#reason !== undefined) {
      this.log.info("cache disk recovered; archives are cached again", { was: this.#reason });
      this.#reason = undefined;
      this.#need = 1;
    }
    return this.#reason === undefined;
  }

  /** Stops the recovery probe (app shutdown). */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#probing?.catch(() => {});
  }
}
