/**
 * The provider registry protocol's JSON documents: the `versions` list and
 * the per-platform `download` document, their parsers (which refuse what
 * Repoxy could not use), and the one rewrite a caching proxy may make.
 * Pure functions over strings.
 * @module
 */
import { isValidOsArch, isValidVersion, type PlatformRef, platformString } from "./names.ts";
import { jsonShapeProblem } from "./json_shape.ts";

/** A registry document Repoxy cannot use; the message says what is wrong with it. */
export class RegistryDocError extends Error {
  override name = "RegistryDocError";
}

/** One entry of the registry's `versions` answer. */
export interface VersionEntry {
  version: string;
  protocols?: string[];
  platforms?: PlatformRef[];
}

/** The registry's `download` answer (only the fields Repoxy relies on are typed). */
export interface DownloadDoc {
  os: string;
  arch: string;
  filename: string;
  "download_url": string;
  "shasums_url"?: string;
  "shasums_signature_url"?: string;
  shasum: string;
  "signing_keys"?: { "gpg_public_keys"?: Array<{ "key_id"?: string; "ascii_armor"?: string }> };
  [k: string]: unknown;
}

/** A parsed version list plus the exact upstream body. */
export interface VersionsValue {
  versions: VersionEntry[];
  raw: string;
}

/** A parsed download document plus the exact upstream body and its URL. */
export interface DownloadValue {
  doc: DownloadDoc;
  raw: string;
  /** Final URL of the document; relative URLs inside resolve against it. */
  url: string;
}

/** SHA256SUMS and its detached signature, byte for byte. */
export interface SumsValue {
  sums: Uint8Array;
  signature: Uint8Array | undefined;
}

/**
 * Parses a `versions` document. Entries whose version is not valid semver are
 * skipped (as Terraform skips them); platforms that are not valid names too.
 * `platforms` is optional (real registries leave it out, and it is only a
 * hint: SHA256SUMS says which archives exist).
 *
 * @throws {RegistryDocError} when it is not JSON or has no `versions` array
 */
export function parseVersions(text: string): VersionEntry[] {
  // Before parsing: a shape that would cost hundreds of MB of heap is refused.
  const shape = jsonShapeProblem(text);
  if (shape) throw new RegistryDocError(`an implausible version list (${shape})`);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new RegistryDocError("a malformed version list");
  }
  const list = (json as { versions?: unknown })?.versions;
  if (!Array.isArray(list)) throw new RegistryDocError('a version list without "versions"');
  const out: VersionEntry[] = [];
  for (const v of list) {
    if (
      !v || typeof v !== "object" || typeof v.version !== "string" || !isValidVersion(v.version)
    ) continue;
    const entry: VersionEntry = { version: v.version };
    if (Array.isArray(v.protocols)) {
      entry.protocols = v.protocols.filter((x: unknown) => typeof x === "string");
    }
    if (Array.isArray(v.platforms)) {
      entry.platforms = v.platforms.filter((p: unknown): p is PlatformRef => {
        const { os, arch } = (p ?? {}) as Record<string, unknown>;
        // A regex test of a non-string would test its String() ("undefined").
        return typeof os === "string" && typeof arch === "string" && isValidOsArch(os) &&
          isValidOsArch(arch);
      }).map((p: PlatformRef) => ({ os: p.os, arch: p.arch }));
    }
    out.push(entry);
  }
  return out;
}

/**
 * Parses the `download` document of one platform and checks the fields an
 * archive download relies on.
 *
 * @throws {RegistryDocError} naming what is unusable
 */
export function parseDownload(text: string, pl: PlatformRef): DownloadDoc {
  const shape = jsonShapeProblem(text);
  if (shape) throw new RegistryDocError(`an implausible download document (${shape})`);
  let doc: DownloadDoc;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new RegistryDocError("a malformed download document");
  }
  const bad = (why: string) => new RegistryDocError(`an unusable download document: ${why}`);
  if (!doc || typeof doc !== "object") throw bad("not an object");
  if (typeof doc.download_url !== "string" || doc.download_url === "") throw bad("no download_url");
  if (typeof doc.shasum !== "string" || !/^[0-9a-fA-F]{64}$/.test(doc.shasum)) {
    throw bad("shasum is not 64 hex digits");
  }
  if (typeof doc.filename !== "string" || doc.filename === "" || /[\/\\]/.test(doc.filename)) {
    throw bad("bad filename");
  }
  if (doc.os !== pl.os || doc.arch !== pl.arch) {
    throw bad(`it is for ${doc.os}_${doc.arch}, not ${platformString(pl)}`);
  }
  return doc;
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

/**
 * A `versions` document narrowed to what can be served: only the versions
 * `keep` returns platforms for, each listing exactly those platforms — the
 * ones the upstream listed first, in its order, then the others (the list
 * was only a hint: an archive SHA256SUMS named may be stored although the
 * upstream left its platform out, or listed none). Other fields keep their
 * values.
 */
export function filterVersionsDoc(
  raw: string,
  keep: (version: string) => PlatformRef[] | undefined,
): { doc: string; versions: number } {
  const doc = JSON.parse(raw) as {
    versions: Array<{ version: string; platforms?: PlatformRef[] }>;
  };
  const kept = [];
  for (const v of doc.versions) {
    const have = keep(v.version);
    if (!have || have.length === 0) continue;
    const names = new Set(have.map(platformString));
    const listed = (Array.isArray(v.platforms) ? v.platforms : []).filter((pl) =>
      !!pl && typeof pl === "object" && names.delete(platformString(pl))
    );
    const others = have.filter((pl) => names.delete(platformString(pl)))
      .map((pl) => ({ os: pl.os, arch: pl.arch }));
    kept.push({ ...v, platforms: [...listed, ...others] });
  }
  return { doc: JSON.stringify({ ...doc, versions: kept }), versions: kept.length };
}
