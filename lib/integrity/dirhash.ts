/**
 * Terraform's "h1:" package hash, which is Go's module hash
 * (`golang.org/x/mod/sumdb/dirhash`, `Hash1`) applied to a provider zip.
 * Lock files pin providers by it, so ours must match Terraform's byte for byte.
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
} from "./zip_reader.ts";

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

async function hashEntry(file: ZipFile, entry: ZipEntry): Promise<string> {
  const h = createHash("sha256");
  for await (const chunk of openZipEntry(file, entry)) {
    h.update(chunk);
    releaseChunk(chunk);
  }
  return h.digest("hex");
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
 * @throws {import("./zip_reader.ts").ZipFormatError} if the archive is malformed or unreadable
 * @throws {Error} if an entry name contains a newline
 */
export async function hashZipH1(source: string | ZipFile): Promise<string> {
  const file = typeof source === "string" ? await Deno.open(source, { read: true }) : source;
  try {
    const entries = await readZipEntries(file);
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
    for (const [key, entry] of unique) digests.set(key, await hashEntry(file, entry));
    return summaryHash(names.map((name) => ({ name, sha256Hex: digests.get(bytesKey(name))! })));
  } finally {
    if (typeof source === "string") (file as Deno.FsFile).close();
  }
}
