/**
 * The cache directory as a whole: its layout (`refs/`, `packages/`, `tmp/`)
 * and the stores opened on it. The server and every maintenance command open
 * a cache through {@link openCacheDir}, so they all agree on where things are.
 *
 * **Temp folders.** Every process (server, `warm`, `import`, ...) writes its
 * temp files in a folder of its own, `tmp/<pid>-<random>/`, next to a lock
 * file `tmp/<pid>-<random>.lock` on which it holds an exclusive `flock` for
 * its whole life ({@link TempArea}). Start-up and shutdown remove only the
 * process's own folder and folders whose lock they can take (their owner is
 * gone), never the working files of another live process on the same cache.
 * The folder is recreated on the next write when someone deleted it (or the
 * whole cache dir) while the process runs.
 *
 * **Symlinks.** The cache dir itself is resolved (`realPath`) once at open;
 * inside it Repoxy follows no symbolic link: `refs/`, `packages/`, `tmp/` and
 * the `packages/<host>/<ns>/<type>` directories must be real directories
 * (else the open fails with a message saying so: move the whole cache dir
 * instead), the walker (`scan.ts`) skips links, and the storage refuses to
 * open or commit through a path that is not its own real path
 * (disk_storage.ts). So `verify`, `prune`, `export`, the metrics and the
 * server all see exactly the same archives.
 * @module
 */
import type { Logger } from "../base/log.ts";
import { join } from "../deps/path.ts";
import { DiskStorage } from "./disk_storage.ts";
import { PackageStore } from "./package_store.ts";
import { RefsStore } from "./refs_store.ts";
import { DiskError, type Storage } from "./storage.ts";

/** The stores of one cache directory. */
export interface CacheDir extends AsyncDisposable {
  /** The cache directory, resolved (no symlinks). */
  root: string;
  /** The local disk (the local tier when a bucket is behind it). */
  storage: DiskStorage;
  refs: RefsStore;
  packages: PackageStore;
  /** This process's temp folder (removed by {@link CacheDir.close}). */
  temp: TempArea;
  /** Removes this process's temp folder and releases its lock. Idempotent. */
  close(): Promise<void>;
}

/** The shared parent of the per-process temp folders. */
export function defaultTmpDir(cacheDir: string): string {
  return join(cacheDir, "tmp");
}

/** The cache directory cannot be used as it is (a symlink inside it, not a directory). */
export class CacheLayoutError extends Error {
  override name = "CacheLayoutError";
}

/** Staging files (`.<id>.lock.new`) and probes older than this are leftovers. */
const DOT_FILE_STALE_MS = 60_000;

function randomId(): string {
  const b = crypto.getRandomValues(new Uint8Array(6));
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

function lstatOrUndefined(path: string): Deno.FileInfo | undefined {
  try {
    return Deno.lstatSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
}

/**
 * One process's temp folder `<parent>/<id>/` and its lock `<parent>/<id>.lock`.
 *
 * The lock file is created under a dot name, locked, then renamed into place,
 * and only then is the folder made: whoever sees the folder also sees its lock
 * file, and whoever can lock that file knows the owner is gone (`flock` locks
 * belong to an open file, so a second open in the same process conflicts
 * too).
 */
export class TempArea {
  /** The folder this process writes its temp files in. */
  readonly dir: string;
  /** Its lock file. */
  readonly lockPath: string;
  #lock: Deno.FsFile | undefined;
  #lockIno: number | null = null;
  #closed = false;

  private constructor(readonly parent: string, readonly id: string) {
    this.dir = join(parent, id);
    this.lockPath = join(parent, `${id}.lock`);
  }

  /**
   * A fresh temp folder under `parent`, made (and locked) on the first
   * {@link ensure}: a command that only reads creates nothing.
   */
  static claim(parent: string): TempArea {
    return new TempArea(parent, `${Deno.pid}-${randomId()}`);
  }

  /**
   * The folder, recreated (with its lock) when it was deleted meanwhile.
   * Synchronous and one `stat` on the usual path: it runs before each temp
   * file is created.
   */
  ensure(): string {
    if (this.#closed) throw new Error(`temp folder ${this.dir} was released`);
    // lstat, both levels: a link planted as tmp/ or as our folder must not
    // carry temp files (or our lock) out of the cache.
    const parent = lstatOrUndefined(this.parent);
    if (parent && !parent.isDirectory) {
      throw new DiskError(
        `${this.parent} is ${
          parent.isSymlink ? "a symbolic link" : "not a directory"
        }; Repoxy writes no temp file through it (remove it: it is made again)`,
      );
    }
    const own = parent ? lstatOrUndefined(this.dir) : undefined;
    if (own?.isDirectory && this.#lockStillOurs()) return this.dir;
    // Our own folder's name, so whatever was put in its place is ours to remove.
    if (own && !own.isDirectory) Deno.removeSync(this.dir);
    Deno.mkdirSync(this.parent, { recursive: true });
    if (!this.#lockStillOurs()) this.#relock();
    Deno.mkdirSync(this.dir, { recursive: true });
    return this.dir;
  }

  #lockStillOurs(): boolean {
    if (!this.#lock) return false;
    try {
      return Deno.lstatSync(this.lockPath).ino === this.#lockIno;
    } catch {
      return false;
    }
  }

  #relock(): void {
    const staging = join(this.parent, `.${this.id}.lock.new`);
    const f = Deno.openSync(staging, { write: true, create: true, truncate: true });
    try {
      f.lockSync(true);
      Deno.writeTextFileSync(staging, `${Deno.pid}\n`);
      Deno.renameSync(staging, this.lockPath);
    } catch (e) {
      f.close();
      throw e;
    }
    try {
      this.#lock?.close();
    } catch { /* closed */ }
    this.#lock = f;
    this.#lockIno = f.statSync().ino;
  }

  /** Removes the folder and the lock file, then releases the lock. */
  async release(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
    if (this.#lockStillOurs()) await Deno.remove(this.lockPath).catch(() => {});
    try {
      this.#lock?.close();
    } catch { /* closed */ }
    this.#lock = undefined;
  }
}

/**
 * Removes what dead processes left in `parent` (the shared `tmp/`): folders
 * whose lock file can be locked, folders and files that have no lock file at
 * all (left by versions before per-process folders), and dot files older
 * than a minute. Never touches `own` or a folder whose owner holds its lock.
 * Returns how many entries were removed.
 */
export async function sweepTempDir(parent: string, own?: TempArea): Promise<number> {
  let removed = 0;
  const present = async (path: string) => {
    try {
      await Deno.lstat(path);
      return true;
    } catch {
      return false;
    }
  };
  try {
    // Streamed, and each decision made on the entry as it is now: a listing
    // taken in advance could show a new owner's folder but not its lock.
    for await (const e of Deno.readDir(parent)) {
      const name = e.name;
      if (own && (name === own.id || name === `${own.id}.lock`)) continue;
      const path = join(parent, name);
      try {
        if (name.startsWith(".")) {
          const st = await Deno.lstat(path);
          const age = Date.now() - (st.mtime?.getTime() ?? 0);
          if (age > DOT_FILE_STALE_MS) {
            await Deno.remove(path, { recursive: true });
            removed++;
          }
        } else if (name.endsWith(".lock")) {
          const dir = path.slice(0, -5);
          if (await removeIfUnlocked(path, dir, await present(dir))) removed++;
        } else if (!(await present(`${path}.lock`))) {
          // No lock file: an old-style leftover, or a folder whose lock another
          // sweeper just removed together with it. (An owner makes its lock
          // before its folder, so a live folder always has one.)
          await Deno.remove(path, { recursive: true });
          removed++;
        }
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) throw err;
      }
    }
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return removed;
    throw e;
  }
  return removed;
}

async function removeIfUnlocked(lockPath: string, dir: string, hasDir: boolean): Promise<boolean> {
  // Only ever a regular file of ours: a planted link is removed, never opened.
  if (!(await Deno.lstat(lockPath)).isFile) {
    await Deno.remove(lockPath);
    if (hasDir) await Deno.remove(dir, { recursive: true }).catch(() => {});
    return true;
  }
  let f: Deno.FsFile;
  try {
    f = await Deno.open(lockPath, { read: true, write: true });
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
  try {
    if (!(await f.tryLock(true))) return false; // its owner is alive
    // Still the file we locked (not one a new owner renamed into place)?
    const [held, now] = await Promise.all([f.stat(), Deno.lstat(lockPath).catch(() => null)]);
    if (!now || now.ino !== held.ino) return false;
    if (hasDir) await Deno.remove(dir, { recursive: true }).catch(() => {});
    await Deno.remove(lockPath);
    return true;
  } finally {
    f.close();
  }
}

/**
 * Refuses a cache directory with a symbolic link where Repoxy keeps its
 * directories: `refs/`, `packages/`, `tmp/` and the provider directories
 * `packages/<host>/<ns>/<type>` (a few hundred entries, read once at start).
 */
async function checkNoLinks(root: string): Promise<void> {
  const refuse = async (path: string) => {
    const target = await Deno.readLink(path).catch(() => "?");
    throw new CacheLayoutError(
      `${path} is a symbolic link (to ${target}); Repoxy follows no links inside its cache ` +
        `directory, so the server, verify, prune and export would disagree about it. ` +
        `Move the whole cache directory instead (point "cacheDir" at the other disk), or ` +
        `replace the link by a bind mount`,
    );
  };
  for (const top of ["refs", "packages", "tmp"]) {
    const path = join(root, top);
    const st = await Deno.lstat(path).catch(() => undefined);
    if (st?.isSymlink) await refuse(path);
  }
  const walk = async (dir: string, depth: number): Promise<void> => {
    let it: AsyncIterable<Deno.DirEntry>;
    try {
      it = Deno.readDir(dir);
      for await (const e of it) {
        const path = join(dir, e.name);
        if (e.isSymlink) await refuse(path);
        if (e.isDirectory && depth < 3) await walk(path, depth + 1);
      }
    } catch (e) {
      if (e instanceof CacheLayoutError) throw e;
      if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) return;
      throw e;
    }
  };
  await walk(join(root, "packages"), 1);
}

/**
 * Opens the stores of a cache directory and claims this process's temp
 * folder (sweeping what dead processes left in `tmp/`).
 *
 * @param opts.create create `refs/`, `packages/` and `tmp/` when missing
 *   (default true; commands that only read pass false, so a mistyped path is
 *   not turned into an empty cache)
 * @param opts.onSwept told how many leftovers of dead processes were removed
 * @throws CacheLayoutError when a directory of the cache is a symbolic link
 */
export async function openCacheDir(
  cacheDir: string,
  log: Logger,
  opts: {
    create?: boolean;
    onSwept?: (removed: number) => void;
    /** Puts a shared tier behind the local disk for refs and packages (`storage.kind: s3`). */
    tier?: ((local: DiskStorage) => Storage) | undefined;
  } = {},
): Promise<CacheDir> {
  if (opts.create ?? true) {
    await Deno.mkdir(join(cacheDir, "refs"), { recursive: true });
    await Deno.mkdir(join(cacheDir, "packages"), { recursive: true });
    await Deno.mkdir(join(cacheDir, "tmp"), { recursive: true });
  }
  let root = cacheDir;
  try {
    root = await Deno.realPath(cacheDir);
  } catch (e) {
    // A read-only command on a missing cache reads nothing; it fails later
    // with its own message.
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  await checkNoLinks(root);
  const parent = defaultTmpDir(root);
  const temp = TempArea.claim(parent);
  try {
    const removed = await sweepTempDir(parent, temp);
    opts.onSwept?.(removed);
  } catch (e) {
    log.warn("cannot clean up temp files of earlier runs", {
      dir: parent,
      error: (e as Error).message,
    });
  }
  const storage = new DiskStorage(root, temp);
  // `storage` stays the local disk (quota, scans, verify); the stores see the tier.
  const tiered = opts.tier ? opts.tier(storage) : storage;
  const refs = new RefsStore(tiered);
  const packages = new PackageStore(tiered, refs, log);
  const close = async () => {
    await temp.release();
    await sweepTempDir(parent).catch(() => 0);
  };
  return { root, storage, refs, packages, temp, close, [Symbol.asyncDispose]: close };
}
