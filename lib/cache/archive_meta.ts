/**
 * The record Repoxy keeps beside each stored archive (in `refs/`): what was
 * verified when it was stored. One type, one parser, one encoder, so the
 * serving path and the maintenance commands read it the same way.
 * @module
 */

/** What Repoxy records about a stored archive. */
export interface ArchiveMeta {
  /** Lowercase hex sha256 of the archive: its `zh:` hash and strong ETag. */
  sha256: string;
  size: number;
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
    (m.h1 !== undefined && (typeof m.h1 !== "string" || !m.h1.startsWith("h1:")))
  ) return undefined;
  const meta: ArchiveMeta = { sha256: m.sha256, size: m.size, cachedAt: m.cachedAt, url: m.url };
  if (m.h1 !== undefined) meta.h1 = m.h1 as string;
  return meta;
}

/** The stored text of an archive record. */
export function encodeArchiveMeta(meta: ArchiveMeta): string {
  return JSON.stringify(meta);
}
