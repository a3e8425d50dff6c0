/**
 * The record Repoxy keeps beside each stored archive (in `refs/`): what was
 * verified when it was stored. One type, one parser, one encoder, so the
 * serving path and the maintenance commands read it the same way.
 * @module
 */
import { createHash } from "../deps/crypto.ts";

/** What Repoxy records about a stored archive. */
export interface ArchiveMeta {
  /** Lowercase hex sha256 of the archive: its `zh:` hash and strong ETag. */
  sha256: string;
  size: number;
  /**
   * The cheap fingerprint ({@link fingerprint}) taken at commit and checked
   * again on every open; absent in records written before it existed.
   */
  fp?: string;
  /** Go dirhash Hash1 of the zip contents, once computed. */
  h1?: string;
  /** Epoch ms when it was stored. */
  cachedAt: number;
  /** Where the bytes came from (the final download URL, or `import:<path>`). */
  url: string;
}

/**
 * Parses an archive record; undefined when it is malformed (an archive whose
 * record does not parse counts as not cached, so it is fetched again).
 */
export function parseArchiveMeta(text: string): ArchiveMeta | undefined {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (!v || typeof v !== "object") return undefined;
  const m = v as Record<string, unknown>;
  if (
    typeof m.sha256 !== "string" || !/^[0-9a-f]{64}$/.test(m.sha256) ||
    typeof m.size !== "number" || !Number.isSafeInteger(m.size) || m.size < 0 ||
    typeof m.cachedAt !== "number" || typeof m.url !== "string" ||
    (m.h1 !== undefined && (typeof m.h1 !== "string" || !m.h1.startsWith("h1:"))) ||
    (m.fp !== undefined && (typeof m.fp !== "string" || !/^[0-9a-f]{64}$/.test(m.fp)))
  ) return undefined;
  const meta: ArchiveMeta = { sha256: m.sha256, size: m.size, cachedAt: m.cachedAt, url: m.url };
  if (m.fp !== undefined) meta.fp = m.fp as string;
  if (m.h1 !== undefined) meta.h1 = m.h1 as string;
  return meta;
}

/** The stored text of an archive record. */
export function encodeArchiveMeta(meta: ArchiveMeta): string {
  return JSON.stringify(meta);
}

/** Bytes the fingerprint reads at each end of an archive. */
export const FINGERPRINT_SPAN = 64 * 1024;

/** What {@link fingerprint} reads from. */
export interface Seekable {
  read(buf: Uint8Array): Promise<number | null>;
  seek(offset: number, whence: Deno.SeekMode): Promise<number>;
}

async function readFully(f: Seekable, buf: Uint8Array): Promise<boolean> {
  let off = 0;
  while (off < buf.length) {
    const n = await f.read(buf.subarray(off));
    if (n === null || n === 0) return false;
    off += n;
  }
  return true;
}

/**
 * A cheap fingerprint of an archive of `size` bytes: the sha256 of its first
 * {@link FINGERPRINT_SPAN} bytes followed by its last ones (each byte once:
 * a small archive is hashed whole). Catches a truncated, replaced or
 * overwritten file at the cost of reading at most 128 KiB; a flipped bit in
 * the middle is the background check's business. Returns undefined when the
 * file is shorter than `size`. Leaves the read position at 0.
 */
export async function fingerprint(f: Seekable, size: number): Promise<string | undefined> {
  const head = new Uint8Array(Math.min(size, FINGERPRINT_SPAN));
  const tailStart = Math.max(head.length, size - FINGERPRINT_SPAN);
  const tail = new Uint8Array(size - tailStart);
  await f.seek(0, Deno.SeekMode.Start);
  if (!(await readFully(f, head))) return undefined;
  if (tail.length > 0) {
    await f.seek(tailStart, Deno.SeekMode.Start);
    if (!(await readFully(f, tail))) return undefined;
  }
  await f.seek(0, Deno.SeekMode.Start);
  return createHash("sha256").update(head).update(tail).digest("hex");
}
