/**
 * Reads small files and counts directory entries under `/proc/self` through
 * libc (`open`/`read`, `opendir`/`readdir`).
 *
 * Why not `Deno.readTextFile`: Deno 2.9 refuses every path under `/proc`
 * unless the process has every permission (`--allow-all`), because some of
 * them (`/proc/self/mem`, `environ`, `fd/*`) reach past the sandbox. The
 * `serve` permission set grants `ffi` for `http/tcp_nodelay.ts` already, and
 * with it the few read-only files the process collector needs can be read
 * without widening anything else. Without `ffi` (or off Linux) every call
 * returns undefined and the caller leaves those series out.
 * @module
 */

const O_RDONLY = 0;
const O_CLOEXEC = 0o2000000;
/** The largest file read: /proc/self/status and limits are under 2 KiB. */
const MAX_BYTES = 16 * 1024;

const SYMBOLS = {
  open: { parameters: ["buffer", "i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  pread: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize" },
  close: { parameters: ["i32"], result: "i32" },
  opendir: { parameters: ["buffer"], result: "pointer" },
  readdir: { parameters: ["pointer"], result: "pointer" },
  closedir: { parameters: ["pointer"], result: "i32" },
  rewinddir: { parameters: ["pointer"], result: "void" },
} as const;

type Libc = Deno.DynamicLibrary<typeof SYMBOLS>;

/** libc opened for reading procfs. */
export class ProcReader implements Disposable {
  readonly #lib: Libc;
  readonly #buf = new Uint8Array(MAX_BYTES);
  /** Files and directories kept open between reads ({@link readKept}, {@link countKept}). */
  readonly #keptFiles = new Map<string, number>();
  readonly #keptDirs = new Map<string, Deno.PointerObject>();

  private constructor(lib: Libc) {
    this.#lib = lib;
  }

  /**
   * Opens libc, or returns undefined where that is impossible (not Linux, no
   * `ffi` permission, no glibc, out of descriptors). The caller disposes it.
   */
  static open(): ProcReader | undefined {
    if (Deno.build.os !== "linux") return undefined;
    if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") return undefined;
    try {
      return new ProcReader(Deno.dlopen("libc.so.6", SYMBOLS));
    } catch {
      return undefined;
    }
  }

  /** The text of a file up to 16 KiB, or undefined when it cannot be read. */
  readText(path: string): string | undefined {
    const s = this.#lib.symbols;
    const fd = s.open(cString(path), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return undefined;
    try {
      let n = 0;
      // procfs hands a file out in pieces of at most a page; read until EOF.
      while (n < MAX_BYTES) {
        const got = Number(s.read(fd, this.#buf.subarray(n), BigInt(MAX_BYTES - n)));
        if (got < 0) return undefined;
        if (got === 0) break;
        n += got;
      }
      return new TextDecoder().decode(this.#buf.subarray(0, n));
    } finally {
      s.close(fd);
    }
  }

  /**
   * Entries of a directory other than `.` and `..`, or undefined when it
   * cannot be listed. Listing `/proc/self/fd` shows the listing's own
   * descriptor too: `own` (default 0) is subtracted for it.
   */
  countEntries(path: string, own = 0): number | undefined {
    const s = this.#lib.symbols;
    const dir = s.opendir(cString(path));
    if (dir === null) return undefined;
    try {
      let n = 0;
      while (s.readdir(dir) !== null) n++;
      return n - 2 - own;
    } finally {
      s.closedir(dir);
    }
  }

  /**
   * Like {@link readText}, but the file is opened once and kept: each call
   * reads it again from offset 0 (`pread`; procfs makes the text anew then).
   * A scrape then needs no new descriptor, so its readings are there when the
   * process has run out of descriptors, which is when they matter.
   */
  readKept(path: string): string | undefined {
    const s = this.#lib.symbols;
    let fd = this.#keptFiles.get(path);
    if (fd === undefined) {
      fd = s.open(cString(path), O_RDONLY | O_CLOEXEC);
      if (fd < 0) return undefined;
      this.#keptFiles.set(path, fd);
    }
    let n = 0;
    while (n < MAX_BYTES) {
      const got = Number(s.pread(fd, this.#buf.subarray(n), BigInt(MAX_BYTES - n), BigInt(n)));
      if (got < 0) return undefined;
      if (got === 0) break;
      n += got;
    }
    return new TextDecoder().decode(this.#buf.subarray(0, n));
  }

  /**
   * Like {@link countEntries}, with the directory kept open and rewound for
   * each count (no new descriptor, as {@link readKept}); `own` is
   * subtracted as in {@link countEntries}.
   */
  countKept(path: string, own = 0): number | undefined {
    const s = this.#lib.symbols;
    let dir = this.#keptDirs.get(path);
    if (dir === undefined) {
      const opened = s.opendir(cString(path));
      if (opened === null) return undefined;
      this.#keptDirs.set(path, dir = opened);
    } else s.rewinddir(dir);
    let n = 0;
    while (s.readdir(dir) !== null) n++;
    return n - 2 - own;
  }

  /** Closes what was kept open, then the library handle. */
  [Symbol.dispose](): void {
    const s = this.#lib.symbols;
    for (const fd of this.#keptFiles.values()) s.close(fd);
    for (const dir of this.#keptDirs.values()) s.closedir(dir);
    this.#keptFiles.clear();
    this.#keptDirs.clear();
    this.#lib.close();
  }
}

function cString(s: string): Uint8Array<ArrayBuffer> {
  const bytes = new TextEncoder().encode(s + "\0");
  return bytes as Uint8Array<ArrayBuffer>;
}
