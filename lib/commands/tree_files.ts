/**
 * Reading a tree someone else wrote (`repoxy import`'s input) without being
 * hurt by it: only regular files are opened (checked with `lstat` first, so
 * a FIFO never blocks an open and a link to `/dev/zero` is never read), each
 * read is bounded, and directories are read as streams.
 * @module
 */

/** What kind of filesystem entry `st` is, for messages. */
export function kindOf(st: Deno.FileInfo): string {
  if (st.isSymlink) return "a symbolic link";
  if (st.isFifo) return "a FIFO";
  if (st.isCharDevice) return "a character device";
  if (st.isBlockDevice) return "a block device";
  if (st.isSocket) return "a socket";
  if (st.isDirectory) return "a directory";
  return "not a regular file";
}

/**
 * The entries of a directory as they come (async iteration: a listing of a
 * million names is never held whole). Dot entries are skipped: staging files
 * of an unfinished mirror run. A directory that cannot be read (permissions,
 * removed meanwhile) is reported in `problems` and ends its listing; it does
 * not end the import.
 */
export async function* entries(
  path: string,
  problems: string[],
): AsyncGenerator<Deno.DirEntry> {
  try {
    for await (const e of Deno.readDir(path)) {
      if (!e.name.startsWith(".")) yield e;
    }
  } catch (e) {
    problems.push(`${path}: cannot be read: ${(e as Error).message}`);
  }
}

/**
 * Reads a small file whole, but only if it is a regular file (lstat: never a
 * link, never a FIFO, which would block the open) of at most `limit` bytes,
 * and never more than `limit` bytes even if it grows meanwhile.
 *
 * @param opts.followLinks judge (and read) what a symbolic link points to
 *   instead of refusing the link: for the user's own files, which may be links
 * @throws {Error} saying why it was not read (the caller names the file)
 */
export async function readBounded(
  path: string,
  limit: number,
  opts: { followLinks?: boolean } = {},
): Promise<Uint8Array> {
  const st = opts.followLinks ? await Deno.stat(path) : await Deno.lstat(path);
  if (!st.isFile) throw new Error(`${kindOf(st)}, not read`);
  if (st.size > limit) throw new Error(`${st.size} bytes, over the limit of ${limit}`);
  using f = await Deno.open(path, { read: true });
  const held = await f.stat();
  if (!held.isFile || held.ino !== st.ino) throw new Error("replaced while being read");
  const buf = new Uint8Array(Math.min(limit, held.size) + 1);
  let off = 0;
  while (off < buf.length) {
    const n = await f.read(buf.subarray(off));
    if (n === null) break;
    off += n;
  }
  if (off > limit) throw new Error(`more than ${limit} bytes, over the limit`);
  return buf.subarray(0, off);
}
