/**
 * Hashing files: copying an archive while hashing it (export, import: one read
 * of the source gives both the copy and the sha256 of exactly the bytes
 * written), and the sha256 of a file (verify).
 * @module
 */
import { createHash } from "../deps/crypto.ts";

/**
 * Copies `from` (a path, or a file the caller opened and still owns) into a
 * new file `to` (which must not exist), fsyncs it, and returns the sha256 and
 * size of the bytes written. More than `limit` bytes is an error. The caller
 * renames it into place and removes it on failure.
 */
export async function copyHashed(
  from: string | Deno.FsFile,
  to: string,
  limit = Infinity,
): Promise<{ sha256: string; size: number }> {
  const hash = createHash("sha256");
  let size = 0;
  using opened = typeof from === "string" ? await Deno.open(from, { read: true }) : undefined;
  const src = opened ?? (from as Deno.FsFile);
  using dst = await Deno.open(to, { write: true, createNew: true });
  const buf = new Uint8Array(256 * 1024);
  while (true) {
    const n = await src.read(buf);
    if (n === null) break;
    size += n;
    if (size > limit) throw new Error(`grew over the limit of ${limit} bytes while being copied`);
    const chunk = buf.subarray(0, n);
    hash.update(chunk);
    let off = 0;
    while (off < n) off += await dst.write(chunk.subarray(off));
  }
  await dst.syncData();
  return { sha256: hash.digest("hex"), size };
}

/** The sha256 and size of a file, read once in large chunks. */
export async function sha256File(path: string): Promise<{ sha256: string; size: number }> {
  const hash = createHash("sha256");
  let size = 0;
  using f = await Deno.open(path, { read: true });
  const buf = new Uint8Array(256 * 1024);
  while (true) {
    const n = await f.read(buf);
    if (n === null) break;
    hash.update(buf.subarray(0, n));
    size += n;
  }
  return { sha256: hash.digest("hex"), size };
}
