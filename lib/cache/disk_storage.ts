/**
 * {@link Storage} on the local disk: one file per key under the cache
 * directory, temp files in a temp directory on the same filesystem (so a
 * commit is one atomic rename), fsynced before they become visible.
 *
 * Also what only a local disk has, which the quota and the maintenance
 * commands use directly: file paths, advisory locks and access times
 * (quota.ts explains how "being served" and LRU recency are tracked).
 * @module
 */
import { dirname, join } from "../deps/path.ts";
import { atomicWrite, syncDir, tempPath } from "./atomic_write.ts";
import {
  checkKey,
  DiskError,
  type ObjectInfo,
  type OpenObject,
  SMALL_OBJECT_MAX_BYTES,
  type Storage,
} from "./storage.ts";

/** Where a {@link DiskStorage} writes its temp files (see `TempArea` in cache_dir.ts). */
export interface TempFolder {
  /** The folder's path. */
  readonly dir: string;
  /** The folder, created again if it was deleted meanwhile. */
  ensure(): string;
}

/** Accesses closer together than this are recorded once (one syscall per file per hour). */
export const ACCESS_GRANULARITY_MS = 3_600_000;

/**
 * Takes a shared lock on an open file for as long as it stays open.
 *
 * Synchronous on purpose: a non-blocking `flock` never waits (it fails if
 * prune holds the exclusive lock, and then the open handle still reads the
 * whole file), and it costs about 0.5 µs where the async variant, which Deno
 * runs on its blocking thread pool, costs about 40 µs per cache hit.
 */
export function lockShared(file: Deno.FsFile): void {
  try {
    file.tryLockSync(false);
  } catch { /* locks unsupported here; prune then cannot see this reader */ }
}

/**
 * True when `path` is its own real path: no component of it under the cache
 * dir is a symbolic link (the root itself was resolved at open). Synchronous:
 * `realpath` costs about 3 µs, the async variant about 25 µs per cache hit.
 */
function isRealPath(path: string): boolean {
  try {
    return Deno.realPathSync(path) === path;
  } catch {
    return false;
  }
}

/** Goes on reading into `buf` (holding `n` bytes) until EOF; undefined past `maxBytes`. */
async function readRest(
  file: Deno.FsFile,
  buf: Uint8Array,
  n: number,
  maxBytes: number,
): Promise<Uint8Array | undefined> {
  for (;;) {
    if (n === buf.length) {
      if (n > maxBytes) return undefined;
      const bigger = new Uint8Array(Math.min(buf.length * 2, maxBytes + 1));
      bigger.set(buf);
      buf = bigger;
    }
    const got = await file.read(buf.subarray(n));
    if (got === null) return buf.subarray(0, n);
    n += got;
  }
}

/**
 * Makes `root/segments...` one level at a time, each checked with lstat:
 * `mkdir -p` would follow a planted link and create directories wherever it
 * leads. Returns the first path that is not a real directory (a link, a
 * file), or undefined when all are.
 */
export async function makeDirsInside(
  root: string,
  segments: readonly string[],
): Promise<string | undefined> {
  let dir = root;
  for (const segment of segments) {
    dir = join(dir, segment);
    let st = await Deno.lstat(dir).catch((e) => {
      if (e instanceof Deno.errors.NotFound) return undefined;
      throw e;
    });
    if (!st) {
      await Deno.mkdir(dir).catch((e) => {
        if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
      });
      st = await Deno.lstat(dir);
    }
    if (!st.isDirectory) return dir;
  }
  return undefined;
}

/**
 * Storage in a directory on the local disk. Symbolic links inside it are
 * never followed: an object reached through one counts as absent (so it is
 * fetched again and the link replaced by the commit's rename), and a commit
 * into a directory reached through one is refused.
 */
export class DiskStorage implements Storage {
  readonly #temp: TempFolder;

  /**
   * @param root the cache directory, resolved (no symlinks)
   * @param temp where temp files go (same filesystem as `root`); a plain
   *   path is used as it is
   */
  constructor(readonly root: string, temp: TempFolder | string) {
    this.#temp = typeof temp === "string"
      ? { dir: temp, ensure: () => (Deno.mkdirSync(temp, { recursive: true }), temp) }
      : temp;
  }

  /**
   * This process's temp folder, created when missing. Never throws: when it
   * cannot be created, the write that uses it fails and says why (a
   * {@link DiskError} for downloads, which then stream without caching).
   */
  get tmpDir(): string {
    try {
      return this.#temp.ensure();
    } catch {
      return this.#temp.dir;
    }
  }

  /** The file path of a key. */
  locate(key: string): string {
    return this.pathOf(key);
  }

  /** The file path of a key. */
  pathOf(key: string): string {
    checkKey(key);
    return join(this.root, ...key.split("/"));
  }

  async get(key: string, maxBytes = SMALL_OBJECT_MAX_BYTES): Promise<Uint8Array | undefined> {
    const path = this.pathOf(key);
    let file: Deno.FsFile | undefined;
    try {
      // lstat before the open: a FIFO would block the open forever, a link
      // could lead to /dev/zero or a file outside the cache.
      const st = await Deno.lstat(path);
      if (!st.isFile || st.size > maxBytes || !isRealPath(path)) return undefined;
      file = await Deno.open(path, { read: true });
      const held = await file.stat();
      if (!held.isFile || held.ino !== st.ino || held.dev !== st.dev || held.size > maxBytes) {
        return undefined;
      }
      // Read at most maxBytes + 1, whatever the size said: the file may grow.
      const first = new Uint8Array(Math.min(held.size + 1, maxBytes + 1));
      return await readRest(file, first, 0, maxBytes);
    } catch {
      return undefined;
    } finally {
      file?.close();
    }
  }

  async put(key: string, data: Uint8Array | string): Promise<void> {
    const path = this.pathOf(key);
    await this.#makeParents(key);
    if (!isRealPath(dirname(path))) throw this.#linked(dirname(path));
    await atomicWrite(path, data, this.tmpDir);
  }

  /** Makes the directories of `key` (see {@link makeDirsInside}). */
  async #makeParents(key: string): Promise<void> {
    const dir = await makeDirsInside(this.root, key.split("/").slice(0, -1));
    if (dir) throw this.#linked(dir);
  }

  #linked(path: string): DiskError {
    return new DiskError(`${path} leads through a symbolic link; Repoxy writes nothing there`);
  }

  async open(key: string): Promise<OpenObject | undefined> {
    let file: Deno.FsFile;
    const path = this.pathOf(key);
    try {
      // Only a regular file is opened: a FIFO planted there would block the
      // open (and a worker thread) for as long as no writer comes.
      if (!(await Deno.lstat(path)).isFile) return undefined;
      file = await Deno.open(path, { read: true });
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return undefined;
      throw e;
    }
    // Checked after the open, so a link planted between the check and the
    // open cannot slip through; the open handle is what gets served.
    if (!isRealPath(path)) {
      file.close();
      return undefined;
    }
    try {
      // The handle's own stat: the size belongs to the bytes that will be read.
      const st = await file.stat();
      if (!st.isFile) {
        file.close();
        return undefined;
      }
      return new DiskObject(key, file, st);
    } catch (e) {
      file.close();
      throw e;
    }
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    try {
      const path = this.pathOf(key);
      const st = await Deno.stat(path);
      if (!isRealPath(path)) return undefined;
      return st.isFile ? { key, size: st.size, mtime: st.mtime, atime: st.atime } : undefined;
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return undefined;
      throw e;
    }
  }

  async *list(prefix: string): AsyncGenerator<ObjectInfo> {
    const base = prefix.replace(/\/+$/, "");
    yield* this.#walk(base);
  }

  async *#walk(key: string): AsyncGenerator<ObjectInfo> {
    const names: Array<{ name: string; dir: boolean }> = [];
    try {
      for await (const e of Deno.readDir(this.pathOf(key))) {
        if (e.isDirectory || e.isFile) names.push({ name: e.name, dir: e.isDirectory });
      }
    } catch (e) {
      if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) return;
      throw e;
    }
    names.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const n of names) {
      const child = `${key}/${n.name}`;
      if (n.dir) yield* this.#walk(child);
      else {
        const info = await this.stat(child).catch(() => undefined);
        if (info) yield info; // gone meanwhile: skipped
      }
    }
  }

  /**
   * A fresh path in this process's own temp folder, which is created again
   * first when it was deleted (a cache dir emptied while running).
   */
  tempPath(hint: string): string {
    return tempPath(this.tmpDir, hint);
  }

  async commit(tmp: string, key: string): Promise<void> {
    const path = this.pathOf(key);
    await this.#makeParents(key);
    if (!isRealPath(dirname(path))) throw this.#linked(dirname(path));
    await Deno.rename(tmp, path);
    await syncDir(dirname(path));
  }

  async delete(key: string): Promise<boolean> {
    const path = this.pathOf(key);
    // Never a file reached through a planted directory link.
    if (!isRealPath(dirname(path))) return false;
    try {
      await Deno.remove(path);
      return true;
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return false;
      throw e;
    }
  }

  /**
   * Puts an object's times back after a maintenance read (verify, export),
   * which the kernel may have counted as an access (relatime); the access
   * time is what `prune` evicts by.
   */
  async restoreTimes(info: ObjectInfo): Promise<void> {
    if (!info.atime || !info.mtime) return;
    await Deno.utime(this.pathOf(info.key), info.atime, info.mtime).catch(() => {});
  }
}

/** An open file of the disk storage. */
class DiskObject implements OpenObject {
  readonly size: number;
  readonly mtime: Date | null;
  readonly atime: Date | null;
  readonly identity: string;

  constructor(readonly key: string, readonly file: Deno.FsFile, st: Deno.FileInfo) {
    this.size = st.size;
    this.mtime = st.mtime;
    this.atime = st.atime;
    // Any write, truncate, rename over or chmod changes one of these.
    this.identity = `${st.dev}:${st.ino}:${st.size}:${st.mtime?.getTime()}:${st.ctime?.getTime()}`;
  }

  read(buf: Uint8Array): Promise<number | null> {
    return this.file.read(buf);
  }

  seek(offset: number, whence: Deno.SeekMode): Promise<number> {
    return this.file.seek(offset, whence);
  }

  close(): void {
    try {
      this.file.close();
    } catch { /* already closed */ }
  }

  /**
   * A shared lock for as long as the handle is open (prune skips locked
   * files) and the access time for LRU eviction, at most once per
   * {@link ACCESS_GRANULARITY_MS}, so it works on `noatime` mounts and costs
   * nothing on most hits. The modification time is left alone: it is the
   * archive's Last-Modified.
   */
  async markServing(now: number = Date.now()): Promise<void> {
    lockShared(this.file);
    const last = this.atime?.getTime();
    if (this.mtime && (last === undefined || now - last >= ACCESS_GRANULARITY_MS)) {
      try {
        await this.file.utime(new Date(now), this.mtime);
      } catch { /* read-only cache: LRU falls back to download time */ }
    }
  }
}
