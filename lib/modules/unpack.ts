/**
 * Unpacks an upstream module archive (`.tar.gz` streamed, `.zip` from a
 * file) into an empty directory, refusing the whole archive at the first
 * hostile entry: an absolute path, a `..` segment, a backslash or control
 * character, a symlink or hard link (which could point anywhere), a device,
 * or more bytes or files than allowed. Nothing of a refused archive is kept:
 * the caller removes the directory and stores nothing.
 * @module
 */
import { openZipEntry, readZipEntries } from "../integrity/zip_reader.ts";

/** The archive has an entry Repoxy will not unpack, or is malformed or too big. */
export class HostileArchiveError extends Error {
  override name = "HostileArchiveError";
}

/** Bounds of one unpack. */
export interface UnpackBounds {
  maxBytes: number;
  maxFiles: number;
}

/** The entry's path as a safe relative path ("" for the root), or an error. */
export function safeEntryPath(name: string): string {
  let n = name;
  while (n.startsWith("./")) n = n.slice(2);
  if (n.endsWith("/")) n = n.slice(0, -1);
  if (n === "" || n === ".") return "";
  // deno-lint-ignore no-control-regex
  if (n.startsWith("/") || /^[a-zA-Z]:/.test(n) || n.includes("\\") || /[\x00-\x1f]/.test(n)) {
    throw new HostileArchiveError(`entry "${name}" is not a plain relative path`);
  }
  const segs = n.split("/");
  if (segs.some((s) => s === ".." || s === "")) {
    throw new HostileArchiveError(`entry "${name}" leaves the archive's directory`);
  }
  if (segs[0] === ".git") throw new HostileArchiveError(`entry "${name}" is inside .git`);
  return segs.filter((s) => s !== ".").join("/");
}

/** Writes one file below `dir`, creating parents; never through a symlink (none are made). */
async function writeEntry(
  dir: string,
  rel: string,
  body: ReadableStream<Uint8Array>,
  exec: boolean,
  budget: { bytes: number },
): Promise<void> {
  const path = `${dir}/${rel}`;
  const parent = path.slice(0, path.lastIndexOf("/"));
  await Deno.mkdir(parent, { recursive: true });
  const f = await Deno.open(path, {
    write: true,
    create: true,
    truncate: true,
    mode: exec ? 0o755 : 0o644,
  });
  try {
    for await (const chunk of body) {
      budget.bytes -= chunk.length;
      if (budget.bytes < 0) throw new HostileArchiveError("archive content over the size limit");
      let off = 0;
      while (off < chunk.length) off += await f.write(chunk.subarray(off));
    }
  } finally {
    f.close();
  }
  await Deno.chmod(path, exec ? 0o755 : 0o644);
}

/** A byte reader over a stream that hands out exact lengths. */
class ExactReader {
  #buf = new Uint8Array(0);
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  constructor(stream: ReadableStream<Uint8Array>) {
    this.#reader = stream.getReader();
  }
  /** Up to n bytes from the buffer or the stream; empty at the end. */
  async #fill(n: number): Promise<boolean> {
    while (this.#buf.length < n) {
      const { value, done } = await this.#reader.read();
      if (done) return false;
      const b = new Uint8Array(this.#buf.length + value.length);
      b.set(this.#buf);
      b.set(value, this.#buf.length);
      this.#buf = b;
    }
    return true;
  }
  async take(n: number): Promise<Uint8Array> {
    if (!await this.#fill(n)) throw new HostileArchiveError("archive ends early");
    const out = this.#buf.slice(0, n);
    this.#buf = this.#buf.subarray(n);
    return out;
  }
  /** Streams exactly n bytes, in chunks of at most 64 KiB. */
  stream(n: number): ReadableStream<Uint8Array> {
    let left = n;
    return new ReadableStream({
      pull: async (c) => {
        if (left === 0) return c.close();
        const k = Math.min(left, 64 * 1024);
        c.enqueue(await this.take(k));
        left -= k;
      },
    });
  }
  /** Reads and drops exactly n bytes, 64 KiB at a time (never n bytes at once). */
  async skip(n: number): Promise<void> {
    for (let left = n; left > 0;) {
      const k = Math.min(left, 64 * 1024);
      await this.take(k);
      left -= k;
    }
  }
  cancel(): Promise<void> {
    return this.#reader.cancel().catch(() => {});
  }
}

const dec = new TextDecoder();

function field(h: Uint8Array, at: number, len: number): string {
  const b = h.subarray(at, at + len);
  const z = b.indexOf(0);
  return dec.decode(z >= 0 ? b.subarray(0, z) : b);
}

function num(h: Uint8Array, at: number, len: number): number {
  if (h[at]! & 0x80) throw new HostileArchiveError("binary-encoded tar size");
  const s = field(h, at, len).trim();
  const n = s === "" ? 0 : parseInt(s, 8);
  if (!Number.isSafeInteger(n) || n < 0) throw new HostileArchiveError("bad tar number");
  return n;
}

/** The `path` of PAX records, if any. */
function paxPathOf(text: string): string | undefined {
  let path: string | undefined;
  let rest = text;
  while (rest.length > 0) {
    const sp = rest.indexOf(" ");
    const len = parseInt(rest.slice(0, sp), 10);
    if (!(len > 0)) break;
    const rec = rest.slice(sp + 1, len - 1);
    const eq = rec.indexOf("=");
    if (rec.slice(0, eq) === "path") path = rec.slice(eq + 1);
    rest = rest.slice(len);
  }
  return path;
}

/** Unpacks a gzipped tar stream into `dir` (which must exist, empty). */
export async function unpackTarGz(
  gz: ReadableStream<Uint8Array>,
  dir: string,
  bounds: UnpackBounds,
): Promise<{ files: number }> {
  const r = new ExactReader(
    gz.pipeThrough(
      new DecompressionStream("gzip") as unknown as TransformStream<Uint8Array, Uint8Array>,
    ),
  );
  const budget = { bytes: bounds.maxBytes };
  let files = 0;
  let entries = 0;
  let longName: string | undefined;
  try {
    for (;;) {
      const h = await r.take(512);
      if (h.every((b) => b === 0)) break;
      const size = num(h, 124, 12);
      const type = String.fromCharCode(h[156]!);
      const padded = size + ((512 - (size % 512)) % 512);
      // Every header counts, metadata ones too: a gzip bomb of PAX headers
      // would otherwise loop with no bound but the deadline.
      if (++entries > 4 * bounds.maxFiles) {
        throw new HostileArchiveError(`archive has more than ${4 * bounds.maxFiles} entries`);
      }
      if (type === "x" || type === "L" || type === "g") {
        // Read whole into memory, so bounded (a global one is read and dropped).
        if (size > 64 * 1024) throw new HostileArchiveError("oversized tar extended header");
        const body = await r.take(padded);
        if (type === "g") continue;
        const text = dec.decode(body.subarray(0, size));
        longName = type === "L" ? text.replace(/\0+$/, "") : paxPathOf(text) ?? longName;
        continue;
      }
      const prefix = field(h, 345, 155);
      const raw = longName ?? (prefix ? `${prefix}/${field(h, 0, 100)}` : field(h, 0, 100));
      longName = undefined;
      const rel = safeEntryPath(raw);
      if (type === "5") {
        if (rel) await Deno.mkdir(`${dir}/${rel}`, { recursive: true });
        // A directory's payload (meaningless, but a header may claim gigabytes
        // of it) is dropped as it streams and counts toward the size bound.
        budget.bytes -= size;
        if (budget.bytes < 0) throw new HostileArchiveError("archive content over the size limit");
        await r.skip(padded);
        continue;
      }
      if (type === "1" || type === "2") {
        throw new HostileArchiveError(`entry "${raw}" is a link; links are not unpacked`);
      }
      if (type !== "0" && type !== "\0" && type !== "7") {
        throw new HostileArchiveError(`entry "${raw}" has unsupported type "${type}"`);
      }
      if (rel === "") throw new HostileArchiveError(`entry "${raw}" names no file`);
      if (++files > bounds.maxFiles) {
        throw new HostileArchiveError(`archive has more than ${bounds.maxFiles} files`);
      }
      if (size > budget.bytes) throw new HostileArchiveError("archive content over the size limit");
      const exec = (num(h, 100, 8) & 0o111) !== 0;
      await writeEntry(dir, rel, r.stream(size), exec, budget);
      await r.take(padded - size);
    }
  } catch (e) {
    await r.cancel();
    if (e instanceof HostileArchiveError) throw e;
    throw new HostileArchiveError(`archive cannot be read: ${(e as Error).message}`);
  }
  await r.cancel();
  return { files };
}

/** Unpacks the zip file at `path` into `dir` (which must exist, empty). */
export async function unpackZip(
  path: string,
  dir: string,
  bounds: UnpackBounds,
): Promise<{ files: number }> {
  const f = await Deno.open(path);
  try {
    let entries;
    try {
      entries = await readZipEntries(f, { maxEntries: bounds.maxFiles });
    } catch (e) {
      throw new HostileArchiveError(`archive cannot be read: ${(e as Error).message}`);
    }
    const budget = { bytes: bounds.maxBytes };
    let files = 0;
    for (const e of entries) {
      const rel = safeEntryPath(e.name);
      if (e.name.endsWith("/")) {
        if (rel) await Deno.mkdir(`${dir}/${rel}`, { recursive: true });
        continue;
      }
      if (rel === "") throw new HostileArchiveError(`entry "${e.name}" names no file`);
      if (e.uncompressedSize > budget.bytes) {
        throw new HostileArchiveError("archive content over the size limit");
      }
      files++;
      try {
        await writeEntry(dir, rel, openZipEntry(f, e), false, budget);
      } catch (err) {
        if (err instanceof HostileArchiveError) throw err;
        throw new HostileArchiveError(`archive cannot be read: ${(err as Error).message}`);
      }
    }
    return { files };
  } finally {
    f.close();
  }
}
