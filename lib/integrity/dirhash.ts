/**
 * Terraform's "h1:" package hash, which is Go's module hash
 * (`golang.org/x/mod/sumdb/dirhash`, `Hash1`) applied to a provider zip.
 * Lock files pin providers by it, so ours must match Terraform's byte for byte.
 *
 * The work is bounded by what the archive declares, because a correctly
 * signed archive can still be hostile: entries that share one deflate stream
 * (overlapping local headers) make a 1 MB zip inflate to 160 GiB. Before any
 * content is read, an archive is refused when its entries overlap, when it
 * has more than {@link H1_BOUNDS}.maxEntries entries, or when its declared
 * uncompressed total is absurd for its size; while hashing, no entry may
 * inflate past its declared size (zip_reader.ts), the job yields to the event
 * loop every few milliseconds so other requests keep their latency, and it
 * stops at its next chunk when its signal aborts (shutdown).
 * @module
 */
import { releaseChunk } from "../base/buffers.ts";
import { createHash } from "../deps/crypto.ts";
import {
  openZipEntry,
  readZipEntries,
  type ZipEntry,
  zipEntryNameBytes,
  type ZipFile,
  ZipFormatError,
} from "./zip_reader.ts";

/**
 * Bounds no real provider comes near: a provider zip holds one executable
 * (sometimes a license and a readme besides) and deflate gets about 2-4x out
 * of it. The floor lets small archives of very compressible text through.
 */
export const H1_BOUNDS = Object.freeze({
  /** Entries of one archive. */
  maxEntries: 10_000,
  /** Declared uncompressed total over archive size. */
  maxRatio: 100,
  /** A declared uncompressed total this small is accepted whatever the ratio. */
  ratioFloorBytes: 64 * 2 ** 20,
  /** Declared uncompressed total, whatever the archive size. */
  maxTotalBytes: 32 * 2 ** 30,
});

/** How long the hash may hold the event loop before it lets other work run. */
const YIELD_AFTER_MS = 5;

/** Options of {@link hashZipH1}. */
export interface HashZipOptions {
  /** Abandons the job at its next chunk (shutdown). */
  signal?: AbortSignal;
}

const encoder = new TextEncoder();
const NEWLINE = 0x0a;
const SHA256_HEX = /^[0-9a-f]{64}$/i;

interface HashedName {
  name: Uint8Array;
  sha256Hex: string;
}

/**
 * Go sorts names with sort.Strings, which compares UTF-8 bytes. JavaScript's
 * default sort compares UTF-16 code units, which orders astral characters
 * before U+E000..U+FFFF and would change the hash.
 */
function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    if (a[i] !== b[i]) return a[i]! - b[i]!;
  }
  return a.length - b.length;
}

function summaryHash(files: HashedName[]): string {
  const sorted = [...files].sort((a, b) => compareBytes(a.name, b.name));
  const h = createHash("sha256");
  for (const f of sorted) {
    // The summary is line-based, so a newline in a name would be ambiguous.
    if (f.name.includes(NEWLINE)) {
      throw new Error("dirhash: filenames with newlines are not supported");
    }
    h.update(`${f.sha256Hex}  `);
    h.update(f.name);
    h.update("\n");
  }
  return "h1:" + h.digest("base64");
}

/**
 * Computes an h1 hash from already-hashed files: each name with the SHA-256 of
 * its content. This is the pure part of {@link hashZipH1}.
 * @param files names (as in the zip, "/"-separated) and lowercase or uppercase hex SHA-256 digests
 * @returns "h1:" followed by the standard base64 SHA-256 of the summary
 * @throws {Error} if a name contains a newline or a digest is not 64 hex digits
 */
export function h1FromFileHashes(files: Array<{ name: string; sha256Hex: string }>): string {
  return summaryHash(files.map((f) => {
    if (!SHA256_HEX.test(f.sha256Hex)) {
      throw new Error(`dirhash: "${f.sha256Hex}" for "${f.name}" is not a hex SHA-256 digest`);
    }
    // Go formats digests with %x, i.e. lowercase.
    return { name: encoder.encode(f.name), sha256Hex: f.sha256Hex.toLowerCase() };
  }));
}

/**
 * Lets timers and I/O callbacks run: a resolved promise would not, and a
 * MessageChannel round trip (tried) does not let timers fire either.
 */
function yieldToEventLoop(): Promise<void> {
  return new Promise((r) => setTimeout(r, 0));
}

async function hashEntry(
  file: ZipFile,
  entry: ZipEntry,
  pace: { since: number },
  signal: AbortSignal | undefined,
): Promise<string> {
  const h = createHash("sha256");
  const stream = openZipEntry(file, entry);
  const reader = stream.getReader();
  try {
    while (true) {
      signal?.throwIfAborted();
      const { value, done } = await reader.read();
      if (done) break;
      h.update(value);
      releaseChunk(value);
      if (performance.now() - pace.since >= YIELD_AFTER_MS) {
        await yieldToEventLoop();
        pace.since = performance.now();
      }
    }
  } catch (e) {
    await reader.cancel().catch(() => {});
    throw e;
  }
  return h.digest("hex");
}

/**
 * Refuses archives whose declared shape no real provider has, before any
 * content is inflated.
 */
function checkBounds(unique: ZipEntry[], fileSize: number): void {
  // Entries sorted by offset must not share bytes: overlapping entries are
  // how a small zip makes one deflate stream count many times.
  const byOffset = [...unique].sort((a, b) => a.localHeaderOffset - b.localHeaderOffset);
  let total = 0;
  for (let i = 0; i < byOffset.length; i++) {
    const e = byOffset[i]!;
    total += e.uncompressedSize;
    const next = byOffset[i + 1];
    if (next && e.localHeaderOffset + 30 + e.compressedSize > next.localHeaderOffset) {
      throw new ZipFormatError(
        `entries "${e.name}" and "${next.name}" overlap (offsets ${e.localHeaderOffset} and ${next.localHeaderOffset}); refusing a zip bomb`,
      );
    }
  }
  const bound = Math.min(
    H1_BOUNDS.maxTotalBytes,
    Math.max(H1_BOUNDS.ratioFloorBytes, fileSize * H1_BOUNDS.maxRatio),
  );
  if (total > bound) {
    throw new ZipFormatError(
      `archive of ${fileSize} bytes declares ${total} bytes uncompressed (bound ${bound}); refusing a zip bomb`,
    );
  }
}

function bytesKey(bytes: Uint8Array): string {
  let key = "";
  for (const b of bytes) key += b.toString(16).padStart(2, "0");
  return key;
}

/**
 * Computes Terraform's "h1:" hash of a provider zip archive, the same value as
 * Go's `dirhash.HashZip(path, dirhash.Hash1)`: every central-directory entry
 * (directories included) contributes a line with the SHA-256 of its
 * uncompressed content and its name. The archive is streamed, never loaded.
 * @param source the zip archive: a path on disk, or an open archive (not closed here)
 * @returns "h1:" followed by a standard base64 SHA-256
 * @throws {ZipFormatError} if the archive is malformed, unreadable or out of {@link H1_BOUNDS}
 * @throws {Error} if an entry name contains a newline
 * @throws the signal's reason when `opts.signal` aborts
 */
export async function hashZipH1(
  source: string | ZipFile,
  opts: HashZipOptions = {},
): Promise<string> {
  opts.signal?.throwIfAborted();
  const file = typeof source === "string" ? await Deno.open(source, { read: true }) : source;
  try {
    // The entry bound is applied while reading: collecting every record of
    // a huge central directory first would itself exhaust the heap.
    const entries = await readZipEntries(file, { maxEntries: H1_BOUNDS.maxEntries });
    const names = entries.map((e) => zipEntryNameBytes(e));
    // Checked up front so a bad name fails before any content is hashed.
    if (names.some((n) => n.includes(NEWLINE))) {
      throw new Error("dirhash: filenames with newlines are not supported");
    }
    // Go keys entries by name in a map, so with duplicate names the last
    // entry's content is hashed for every occurrence of the name. Keys are
    // the raw bytes: names that are not valid UTF-8 can decode alike.
    const byName = new Map<string, ZipEntry>();
    entries.forEach((e, i) => byName.set(bytesKey(names[i]!), e));
    const digests = new Map<string, string>();
    // Hashed in archive order to keep disk reads sequential.
    const unique = [...byName].sort(([, a], [, b]) => a.localHeaderOffset - b.localHeaderOffset);
    // Directories have no content (zip_reader.ts skips theirs, as Go does).
    checkBounds(
      unique.map(([, e]) => e).filter((e) => !e.name.endsWith("/")),
      (await file.stat()).size,
    );
    const pace = { since: performance.now() };
    for (const [key, entry] of unique) {
      digests.set(key, await hashEntry(file, entry, pace, opts.signal));
    }
    return summaryHash(names.map((name) => ({ name, sha256Hex: digests.get(bytesKey(name))! })));
  } finally {
    if (typeof source === "string") (file as Deno.FsFile).close();
  }
}
