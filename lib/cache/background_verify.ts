/**
 * The background check: re-hashes every cached archive against its record at
 * a bounded rate (`backgroundVerify.rate` bytes per second; 0 turns it off),
 * one full pass every `backgroundVerify.interval`, so bytes that rot on disk
 * stop being served without waiting for an operator to run `repoxy verify`.
 *
 * A bad archive (wrong size or sha256) is moved to
 * `quarantine/<host>/<ns>/<type>/<file>.<time>` (as `repoxy verify` does) and
 * its record dropped, so the next request fetches and verifies it again. The
 * walk streams (`scanPackages`), the reads are bounded chunks, and the pace
 * is kept by sleeping between chunks, with the clock and the sleep injected so
 * tests run a pass instantly.
 * @module
 */
import type { Logger } from "../base/log.ts";
import { createHash } from "../deps/crypto.ts";
import { join } from "../deps/path.ts";
import { packedArchivePath } from "../protocol/packed_layout.ts";
import type { CacheDir } from "./cache_dir.ts";
import { makeDirsInside } from "./disk_storage.ts";
import { abortableSleep } from "./inventory.ts";
import type { ArchiveMeta } from "./archive_meta.ts";
import { type CachedFile, scanPackages } from "./scan.ts";

const CHUNK = 256 * 1024;
/**
 * The first pass starts this long after start-up (or after one interval,
 * when that is shorter): a process that only runs briefly (a command, a
 * restart loop) does not read the whole cache each time.
 */
export const FIRST_PASS_DELAY_MS = 60_000;

/** What the background check has done since start (read by the metrics). */
export interface BackgroundVerifyStats {
  /** Full passes finished. */
  passes: number;
  /** Archives hashed. */
  archives: number;
  /** Bytes hashed. */
  bytes: number;
  /** Archives found bad and quarantined. */
  bad: number;
}

/** Options of {@link BackgroundVerifier}. */
export interface BackgroundVerifyOptions {
  /** Bytes per second to read; 0 turns the check off. */
  bytesPerSecond: number;
  /** Time from the start of one full pass to the start of the next, in ms. */
  intervalMs: number;
  log: Logger;
  now?: () => number;
  /** Waits; must resolve early when `signal` aborts (the default does). */
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
}

/** Re-hashes the cache in the background until stopped. */
export class BackgroundVerifier {
  readonly stats: BackgroundVerifyStats = { passes: 0, archives: 0, bytes: 0, bad: 0 };
  readonly #stop = new AbortController();
  #task: Promise<void> | undefined;

  constructor(readonly cache: CacheDir, readonly opts: BackgroundVerifyOptions) {}

  /** Starts the loop (a no-op when the rate is 0). */
  start(): void {
    if (this.opts.bytesPerSecond <= 0 || this.#task) return;
    this.#task = this.#loop().catch((e) => {
      this.opts.log.error("background verification stopped", { error: (e as Error).message });
    });
  }

  /** Stops the loop and waits for it (the current read is abandoned). */
  async stop(): Promise<void> {
    this.#stop.abort();
    await this.#task;
  }

  async #loop(): Promise<void> {
    const now = this.opts.now ?? Date.now;
    const sleep = this.opts.sleep ?? abortableSleep;
    const signal = this.#stop.signal;
    await sleep(Math.min(FIRST_PASS_DELAY_MS, this.opts.intervalMs), signal);
    while (!signal.aborted) {
      const started = now();
      await this.runPass();
      if (signal.aborted) return;
      this.stats.passes++;
      const wait = Math.max(0, this.opts.intervalMs - (now() - started));
      await sleep(wait, signal);
    }
  }

  /** One full pass over the cache at the configured rate. */
  async runPass(): Promise<void> {
    const now = this.opts.now ?? Date.now;
    const sleep = this.opts.sleep ?? abortableSleep;
    const signal = this.#stop.signal;
    const rate = this.opts.bytesPerSecond;
    const { storage, packages } = this.cache;
    let budgetStart = now();
    let budgetBytes = 0;
    for await (const f of scanPackages(storage)) {
      if (signal.aborted) return;
      const meta = await packages.readMeta(f.provider, f.version, f.platform);
      if (!meta) continue; // not served either
      const object = await storage.open(f.key);
      if (!object) continue; // pruned meanwhile
      let reason: string | undefined;
      const identity = object.identity;
      try {
        if (object.size !== meta.size) reason = `size ${object.size}, recorded ${meta.size}`;
        else {
          const hash = createHash("sha256");
          const buf = new Uint8Array(CHUNK);
          let total = 0;
          while (true) {
            if (signal.aborted) return;
            const n = await object.read(buf);
            if (n === null || n === 0) break;
            hash.update(buf.subarray(0, n));
            total += n;
            budgetBytes += n;
            // Keep to the rate: sleep until the bytes read so far are due.
            const due = budgetStart + (budgetBytes / rate) * 1000;
            const ahead = due - now();
            if (ahead > 0) await sleep(ahead, signal);
          }
          const sha256 = hash.digest("hex");
          if (total !== meta.size) reason = `read ${total} bytes, recorded ${meta.size}`;
          else if (sha256 !== meta.sha256) reason = `sha256 ${sha256}, recorded ${meta.sha256}`;
          this.stats.archives++;
          this.stats.bytes += total;
        }
      } finally {
        object.close();
      }
      // Restart the budget after long idle stretches (e.g. many tiny files).
      if (budgetBytes > rate * 60) {
        budgetStart = now();
        budgetBytes = 0;
      }
      if (!reason) {
        await storage.restoreTimes(f);
        continue;
      }
      // Only the file that was read: a download may have replaced it meanwhile.
      if (identity && !(await sameFile(storage.pathOf(f.key), identity))) continue;
      await this.#quarantine(f, meta, reason, now());
    }
  }

  async #quarantine(f: CachedFile, meta: ArchiveMeta, reason: string, at: number) {
    const { storage, packages, root } = this.cache;
    const path = storage.pathOf(f.key);
    const stamp = new Date(at).toISOString().replace(/[:.]/g, "-");
    const dest = join(
      root,
      "quarantine",
      `${packedArchivePath(f.provider, f.version, f.platform)}.${stamp}`,
    );
    try {
      // Made without following links (a planted quarantine/ link must not
      // carry the file out of the cache); a link there counts as a failure.
      const linked = await makeDirsInside(
        root,
        [
          "quarantine",
          ...packedArchivePath(f.provider, f.version, f.platform).split("/").slice(0, -1),
        ],
      );
      if (linked) throw new Error(`${linked} is not a directory`);
      await Deno.rename(path, dest);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return; // pruned meanwhile
      // Cannot keep it aside: remove it, it must not be served.
      await storage.delete(f.key).catch(() => false);
    }
    await packages.dropMeta(f.provider, f.version, f.platform, meta);
    await Deno.writeTextFile(
      dest + ".json",
      JSON.stringify({ path, reason, recorded: meta, quarantinedAt: at, by: "background" }) + "\n",
      { createNew: true }, // never through a link planted under that name
    ).catch(() => {});
    this.stats.bad++;
    this.opts.log.error("cached archive failed the background check; quarantined", {
      path,
      reason,
      quarantined: dest,
    });
  }
}

/** Whether `path` is still the file whose identity (`dev:ino:...`) was read. */
async function sameFile(path: string, identity: string): Promise<boolean> {
  try {
    const st = await Deno.lstat(path);
    return identity.startsWith(`${st.dev}:${st.ino}:`);
  } catch {
    return false;
  }
}
