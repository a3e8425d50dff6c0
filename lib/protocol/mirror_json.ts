/**
 * The JSON documents Repoxy writes: network mirror `index.json` and
 * `{version}.json`, and the registry download document with its URLs
 * rewritten. Pure functions over parsed values.
 * @module
 */
import { compareVersions } from "./names.ts";

/** `index.json` of the network mirror protocol: every version, each mapped to `{}`. */
export function mirrorIndexJson(versions: string[]): string {
  const out: Record<string, Record<string, never>> = {};
  for (const v of [...versions].sort((a, b) => compareVersions(b, a))) out[v] = {};
  return JSON.stringify({ versions: out }, null, 2) + "\n";
}

/** One platform's entry in `{version}.json`. */
export interface MirrorArchive {
  /** `{os}_{arch}` */
  platform: string;
  /** Relative to the `{version}.json` URL. */
  url: string;
  /** `h1:` and/or `zh:` hashes; h1 first, as Terraform sorts them. */
  hashes: string[];
}

/** `{version}.json` of the network mirror protocol. */
export function mirrorVersionJson(archives: MirrorArchive[]): string {
  const out: Record<string, { url: string; hashes: string[] }> = {};
  for (const a of [...archives].sort((x, y) => x.platform < y.platform ? -1 : 1)) {
    out[a.platform] = { url: a.url, hashes: a.hashes };
  }
  return JSON.stringify({ archives: out }, null, 2) + "\n";
}

/** The three URLs the registry protocol lets a proxy point at itself. */
export interface RewrittenUrls {
  "download_url": string;
  "shasums_url": string;
  "shasums_signature_url": string;
}

/**
 * Rewrites only `download_url`, `shasums_url` and `shasums_signature_url` of an
 * upstream download document; every other field (`filename`, `shasum`,
 * `protocols`, `signing_keys`, OpenTofu's `packages`, unknown ones) keeps its
 * value and its position.
 *
 * A URL the upstream did not provide is not added.
 */
export function rewriteDownloadDoc(raw: string, urls: RewrittenUrls): string {
  const doc = JSON.parse(raw) as Record<string, unknown>;
  for (const k of ["download_url", "shasums_url", "shasums_signature_url"] as const) {
    if (k in doc) doc[k] = urls[k];
  }
  return JSON.stringify(doc);
}
