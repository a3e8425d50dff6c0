/**
 * Packs a directory into a deterministic `.tar.gz`, streamed to a file: the
 * same tree always gives the same bytes (entries sorted by name, fixed
 * mtime, owner 0, modes 0755/0644 only, no `.git`), so an archive's sha256
 * names its content. Symlinks are left out (counted): a link may point
 * anywhere, and go-getter would recreate it on the client.
 * @module
 */
import { createHash } from "../deps/crypto.ts";

/** The mtime of every entry (2000-01-01T00:00:00Z): fixed, so bytes depend on content only. */
export const FIXED_MTIME = 946_684_800;

/** What packing wrote. */
export interface PackResult {
  sha256: string;
  /** Bytes of the `.tar.gz`. */
  size: number;
  /** Regular files packed. */
  files: number;
  /** Symlinks (and other non-regular entries) left out. */
  skipped: number;
}

/** The tree is larger than allowed. */
export class PackTooLargeError extends Error {
  override name = "PackTooLargeError";
}

const enc = new TextEncoder();

function octal(n: number, width: number): string {
  return n.toString(8).padStart(width - 1, "0") + "\0";
}

function header(name: string, type: "0" | "5" | "x", size: number, mode: number): Uint8Array {
  const h = new Uint8Array(512);
  const put = (s: string | Uint8Array, at: number, max: number) => {
    const b = typeof s === "string" ? enc.encode(s) : s;
    h.set(b.subarray(0, max), at);
  };
  const nameBytes = enc.encode(name);
  if (nameBytes.length <= 100) put(nameBytes, 0, 100);
  else {
    // ustar: prefix (155) + "/" + name (100), split at a slash.
    const cut = name.lastIndexOf("/", name.length - 1);
    put(name.slice(cut + 1), 0, 100);
    put(name.slice(0, cut), 345, 155);
  }
  put(octal(mode, 8), 100, 8);
  put(octal(0, 8), 108, 8);
  put(octal(0, 8), 116, 8);
  put(octal(size, 12), 124, 12);
  put(octal(FIXED_MTIME, 12), 136, 12);
  put("        ", 148, 8);
  put(type, 156, 1);
  put("ustar\u000000", 257, 8);
  let sum = 0;
  for (const b of h) sum += b;
  put(octal(sum, 7) + " ", 148, 8);
  return h;
}

/** Whether `name` fits ustar's name/prefix fields. */
function fitsUstar(name: string): boolean {
  const b = enc.encode(name).length;
  if (b <= 100) return true;
  const cut = name.lastIndexOf("/");
  return cut > 0 && enc.encode(name.slice(0, cut)).length <= 155 &&
    enc.encode(name.slice(cut + 1)).length <= 100;
}

/** A PAX record `"{len} path={name}\n"`, where len counts itself. */
function paxPath(name: string): Uint8Array {
  const body = ` path=${name}\n`;
  let len = enc.encode(body).length + 1;
  while (String(len).length + enc.encode(body).length !== len) len++;
  return enc.encode(`${len}${body}`);
}

function padding(size: number): Uint8Array {
  return new Uint8Array((512 - (size % 512)) % 512);
}

/** The entries of `dir`, depth first, each directory's names in code-unit order, no `.git`. */
async function* walk(
  root: string,
  rel: string,
): AsyncGenerator<{ rel: string; info: Deno.FileInfo }> {
  const names: string[] = [];
  for await (const e of Deno.readDir(rel ? `${root}/${rel}` : root)) names.push(e.name);
  names.sort();
  for (const name of names) {
    if (rel === "" && name === ".git") continue;
    const path = rel ? `${rel}/${name}` : name;
    const info = await Deno.lstat(`${root}/${path}`);
    yield { rel: path, info };
    if (info.isDirectory) yield* walk(root, path);
  }
}

/**
 * Writes `dir` as a deterministic `.tar.gz` to `out` (created new, fsynced).
 * Refuses a tree whose files exceed `maxBytes` or `maxFiles`, and a packed
 * archive over `maxBytes`.
 */
export async function packDirectory(
  dir: string,
  out: string,
  bounds: { maxBytes: number; maxFiles: number },
): Promise<PackResult> {
  const gz = new CompressionStream("gzip");
  const writer = gz.writable.getWriter();
  const file = await Deno.open(out, { write: true, createNew: true });
  const hash = createHash("sha256");
  let size = 0;
  const sink = (async () => {
    for await (const chunk of gz.readable) {
      size += chunk.length;
      if (size > bounds.maxBytes) {
        throw new PackTooLargeError(`archive over ${bounds.maxBytes} bytes`);
      }
      hash.update(chunk);
      let off = 0;
      while (off < chunk.length) off += await file.write(chunk.subarray(off));
    }
  })();
  let files = 0;
  let skipped = 0;
  let total = 0;
  const put = async (b: Uint8Array) => {
    if (b.length > 0) await writer.write(b as Uint8Array<ArrayBuffer>);
  };
  try {
    const writing = (async () => {
      for await (const { rel, info } of walk(dir, "")) {
        if (!info.isDirectory && !info.isFile) {
          skipped++;
          continue;
        }
        const name = info.isDirectory ? `${rel}/` : rel;
        if (!fitsUstar(name)) {
          const pax = paxPath(name);
          await put(header("PaxHeaders/entry", "x", pax.length, 0o644));
          await put(pax);
          await put(padding(pax.length));
        }
        if (info.isDirectory) {
          await put(header(name, "5", 0, 0o755));
          continue;
        }
        if (++files > bounds.maxFiles) {
          throw new PackTooLargeError(`more than ${bounds.maxFiles} files`);
        }
        total += info.size;
        if (total > bounds.maxBytes) {
          throw new PackTooLargeError(`files over ${bounds.maxBytes} bytes`);
        }
        const exec = ((info.mode ?? 0o644) & 0o111) !== 0;
        await put(header(name, "0", info.size, exec ? 0o755 : 0o644));
        const f = await Deno.open(`${dir}/${rel}`);
        try {
          // Exactly the size in the header, even if the file changed meanwhile.
          let left = info.size;
          const buf = new Uint8Array(64 * 1024);
          while (left > 0) {
            const n = await f.read(buf.subarray(0, Math.min(buf.length, left)));
            if (n === null) break;
            await put(buf.slice(0, n));
            left -= n;
          }
          if (left > 0) await put(new Uint8Array(left));
        } finally {
          f.close();
        }
        await put(padding(info.size));
      }
      await put(new Uint8Array(1024));
      await writer.close();
    })();
    // Either side failing stops both: a sink over the bound must not leave the writer waiting.
    await Promise.all([
      writing.catch(async (e) => {
        await writer.abort(e).catch(() => {});
        throw e;
      }),
      sink.catch(async (e) => {
        await writer.abort(e).catch(() => {});
        throw e;
      }),
    ]);
    await file.sync();
  } finally {
    file.close();
  }
  return { sha256: hash.digest("hex"), size, files, skipped };
}
