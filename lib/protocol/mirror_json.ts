/**
 * The network mirror protocol's JSON documents that Repoxy writes:
 * `index.json` and `{version}.json`. Pure functions over parsed values.
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
