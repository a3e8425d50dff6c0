/**
 * The registry-protocol half of an export tree: what an offline Repoxy needs
 * to answer a `host` block (the version list, each platform's download
 * document with the publisher's `signing_keys`, the signed SHA256SUMS and its
 * `.sig`), which the mirror files (`index.json`, `<version>.json`, zips)
 * cannot carry.
 *
 * It lives in a dot-named sidecar beside the hostnames,
 *
 *     DIR/.repoxy/registry/<host>/<ns>/<type>/versions.json
 *     DIR/.repoxy/registry/<host>/<ns>/<type>/<version>/SHA256SUMS
 *     DIR/.repoxy/registry/<host>/<ns>/<type>/<version>/SHA256SUMS.sig
 *     DIR/.repoxy/registry/<host>/<ns>/<type>/<version>/download_<os>_<arch>.json
 *
 * because the tree's other readers pass it by: Terraform's filesystem_mirror
 * search reads `.repoxy/registry/<host>` as hostname/namespace/type, which
 * names no provider anyone requires and is ignored (TF_LOG: "invalid type
 * ...; ignoring" for a hostname with a dot or port; a single-label one would
 * hold no valid version either); the init tests use such a tree,
 * a static network_mirror is only ever asked for the paths its index names,
 * and `repoxy import`'s walk over hostnames (also in older Repoxy versions)
 * skips dot entries. The files are the upstream's bytes (SHA256SUMS and
 * `.sig` exactly as signed, so anyone can check them with gpg), except that
 * any URL carrying a query string or userinfo (a presigned link's credential)
 * is redacted, as `refs/` already stores them.
 *
 * Import trusts none of it: a version's documents enter `refs/` only when
 * SHA256SUMS's signature verifies with the keys a download document carries
 * (or the config's `trustedKeys`, which then replace them: the same rule as
 * serving, lib/integrity/checks.ts), the document's `filename` is this
 * release's archive name, its `shasum` is SHA256SUMS' line for that file, and
 * the archive the cache holds for that platform has that sha256. Anything
 * else is refused by name and not stored. The documents' URLs are stored
 * marked redacted: online again, Repoxy asks the upstream where to fetch,
 * never the carrier.
 * @module
 */
import { REDACTED, redactUrl } from "../base/redact.ts";
import type { CacheDir } from "../cache/cache_dir.ts";
import { entryBytes, refKeys, type RefsStore, toBase64 } from "../cache/refs_store.ts";
import type { Config } from "../config/config.ts";
import { join } from "../deps/path.ts";
import {
  checkMatchingChecksum,
  checkSumsFormat,
  checkSumsSignature,
  IntegrityError,
} from "../integrity/checks.ts";
import { MAX_SIGNATURE_BYTES } from "../integrity/signature.ts";
import {
  archiveFilename,
  isValidHostname,
  isValidOsArch,
  isValidPart,
  isValidVersion,
  type PlatformRef,
  platformString,
  type ProviderRef,
  providerString,
} from "../protocol/names.ts";
import {
  type DownloadDoc,
  filterVersionsDoc,
  parseDownload,
  parseVersions,
  type VersionEntry,
} from "../protocol/registry_json.ts";
import { entries, kindOf, readBounded } from "./tree_files.ts";

/** The sidecar directory's name at the top of an export tree. */
export const SIDECAR = ".repoxy";
const REGISTRY = "registry";
const VERSIONS = "versions.json";
const SUMS = "SHA256SUMS";
const SIG = "SHA256SUMS.sig";
const DOWNLOAD_RE = /^download_([a-z0-9]{1,32})_([a-z0-9]{1,32})\.json$/;

/** `DIR/.repoxy/registry/<host>/<ns>/<type>`. */
export function sidecarProviderDir(root: string, p: ProviderRef): string {
  return join(root, SIDECAR, REGISTRY, p.hostname, p.namespace, p.type);
}

function downloadName(pl: PlatformRef): string {
  return `download_${platformString(pl)}.json`;
}

/** A string that is an absolute URL with a credential in it (query or userinfo). */
function withCredential(s: string): boolean {
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(s)) return false;
  try {
    const u = new URL(s);
    return u.search !== "" || u.username !== "" || u.password !== "";
  } catch {
    return s.includes("?");
  }
}

/**
 * A download document with every URL-valued string that carries a query
 * string or userinfo redacted, wherever it sits (`download_url`, OpenTofu's
 * `packages`, fields nobody knows yet). The text unchanged when none does.
 */
export function redactDocument(text: string): string {
  let changed = false;
  const walk = (v: unknown): unknown => {
    if (typeof v === "string") {
      if (!withCredential(v)) return v;
      changed = true;
      return redactUrl(v);
    }
    if (Array.isArray(v)) return v.map(walk);
    if (v && typeof v === "object") {
      return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x)]));
    }
    return v;
  };
  const out = walk(JSON.parse(text));
  return changed ? JSON.stringify(out) : text;
}

const URL_FIELDS = ["download_url", "shasums_url", "shasums_signature_url"] as const;

/**
 * A carried download document as it is stored: its three URLs marked
 * redacted (`?REDACTED`, what refs/ marks presigned URLs with), so a Repoxy
 * that goes online never fetches from where the carrier pointed: it asks the
 * upstream for the live document and checks that its shasum is this one
 * (see `liveDownload` in upstream/metadata.ts). Offline, these URLs are
 * rewritten to Repoxy's own anyway.
 */
function storedDocument(text: string): string {
  const doc = JSON.parse(redactDocument(text)) as Record<string, unknown>;
  for (const k of URL_FIELDS) {
    const v = doc[k];
    if (typeof v === "string" && !v.endsWith(`?${REDACTED}`)) {
      doc[k] = `${v.split(/[?#]/)[0]}?${REDACTED}`;
    }
  }
  return JSON.stringify(doc);
}

/** What the sidecar got for one provider. */
export interface RegistryExport {
  /** Versions whose SHA256SUMS and at least one download document were written. */
  versions: number;
  /** Download documents written. */
  documents: number;
  /** Versions or platforms the cache holds no registry documents for (mirror protocol only). */
  notes: string[];
}

/**
 * Writes the registry documents of the exported `versions` (version →
 * platforms exported) of provider `p` from `refs` into the sidecar of `root`.
 * A version whose SHA256SUMS, or a platform whose download document, the
 * cache does not hold (imported from `terraform providers mirror`, say) is
 * left out and noted: it stays installable through the mirror protocol.
 *
 * @param write writes a file atomically (creating its directory)
 */
export async function exportRegistryDocs(
  refs: RefsStore,
  root: string,
  p: ProviderRef,
  versions: Map<string, PlatformRef[]>,
  write: (path: string, bytes: Uint8Array) => Promise<void>,
): Promise<RegistryExport> {
  const out: RegistryExport = { versions: 0, documents: 0, notes: [] };
  const dir = sidecarProviderDir(root, p);
  const written = new Map<string, { platforms: PlatformRef[]; protocols?: string[] }>();
  const enc = new TextEncoder();
  const mirrorOnly = "it installs from this tree through the mirror protocols only";
  for (const [version, platforms] of versions) {
    const name = `${providerString(p)} ${version}`;
    const sums = await refs.get(refKeys.sums(p, version));
    if (!sums) {
      out.notes.push(`${name}: the cache holds no signed SHA256SUMS for it; ${mirrorOnly}`);
      continue;
    }
    const docs: Array<{ pl: PlatformRef; text: string }> = [];
    for (const pl of platforms) {
      const dl = await refs.get(refKeys.download(p, version, pl));
      let text: string | undefined;
      try {
        text = dl && redactDocument(dl.body);
      } catch { /* unreadable (it parsed when stored): as if absent */ }
      if (text !== undefined) docs.push({ pl, text });
      else {
        out.notes.push(
          `${name} ${
            platformString(pl)
          }: the cache holds no download document for it; ${mirrorOnly}`,
        );
      }
    }
    if (docs.length === 0) continue;
    const vdir = join(dir, version);
    const sig = await refs.get(refKeys.signature(p, version));
    if (!sig && p.hostname !== "registry.opentofu.org") {
      // Stored unsigned only for OpenTofu's registry (see mayBeUnsigned): say so before the import does.
      out.notes.push(
        `${name}: the cache holds no signature for its SHA256SUMS; import will refuse it`,
      );
    }
    // SHA256SUMS (and .sig) first: an import reading the tree as it is being
    // written finds no download document without its SHA256SUMS.
    await write(join(vdir, SUMS), entryBytes(sums));
    if (sig) await write(join(vdir, SIG), entryBytes(sig));
    let protocols: string[] | undefined;
    for (const { pl, text } of docs) {
      await write(join(vdir, downloadName(pl)), enc.encode(text));
      const pr = (JSON.parse(text) as DownloadDoc).protocols;
      if (Array.isArray(pr)) protocols ??= pr.filter((x): x is string => typeof x === "string");
      out.documents++;
    }
    written.set(version, { platforms: docs.map((d) => d.pl), ...(protocols ? { protocols } : {}) });
    out.versions++;
  }
  if (written.size === 0) return out;
  // The upstream's list narrowed to what was written (nothing about versions
  // left behind travels); built from the documents when the cache has none.
  const stored = await refs.get(refKeys.versions(p));
  let list: string | undefined;
  if (stored) {
    try {
      const { doc, versions: n } = filterVersionsDoc(
        stored.body,
        (v) => written.get(v)?.platforms,
      );
      if (n === written.size) list = doc;
    } catch { /* unreadable: built below */ }
  }
  list ??= JSON.stringify({
    versions: [...written].map(([version, w]) => ({
      version,
      ...(w.protocols ? { protocols: w.protocols } : {}),
      platforms: w.platforms.map((pl) => ({ os: pl.os, arch: pl.arch })),
    })),
  });
  await write(join(dir, VERSIONS), enc.encode(list));
  return out;
}

/** Outcome for one registry document (or a version's set) of the sidecar. */
export interface RegistryItem {
  provider: ProviderRef;
  /** Absent for the provider's `versions.json`. */
  version?: string;
  /** Set for a download document. */
  platform?: PlatformRef;
  document: "SHA256SUMS" | "download document" | "versions.json";
  /** The file in the tree. */
  source: string;
  status: "imported" | "cached" | "refused";
  detail: string;
}

/** Names an item for messages: `host/ns/type 1.0.0 linux_amd64 download document`. */
export function registryItemName(i: RegistryItem): string {
  return [
    providerString(i.provider),
    i.version,
    i.platform ? platformString(i.platform) : undefined,
    i.document,
  ].filter(Boolean).join(" ");
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** lstat that answers undefined for a missing path. */
async function lstatOrNone(path: string): Promise<Deno.FileInfo | undefined> {
  try {
    return await Deno.lstat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
}

/**
 * Ingests the sidecar of `srcDir` (if it has one: a tree without it, such
 * as an older export or `terraform providers mirror` output, yields
 * nothing) into `cache`'s `refs/`. Run after the archives were imported: a
 * download document is accepted only for an archive the cache holds.
 *
 * Hostile trees: only regular files are read (lstat first), SHA256SUMS,
 * download documents and `versions.json` bounded by
 * `limits.metadataDocument`, a `.sig` by 64 KiB; links are reported and not
 * followed; directories are read as streams.
 */
export async function importRegistryDocs(
  config: Config,
  cache: CacheDir,
  srcDir: string,
  problems: string[],
  now: () => number = Date.now,
): Promise<RegistryItem[]> {
  const items: RegistryItem[] = [];
  const top = join(srcDir, SIDECAR);
  const reg = join(top, REGISTRY);
  for (const path of [top, reg]) {
    const st = await lstatOrNone(path).catch((e) => {
      problems.push(`${path}: ${(e as Error).message}`);
      return undefined;
    });
    if (!st) return items;
    if (!st.isDirectory) {
      problems.push(`${path}: ${kindOf(st)}; not followed`);
      return items;
    }
  }
  for await (const host of entries(reg, problems)) {
    const hostDir = join(reg, host.name);
    if (host.isSymlink) linked(problems, hostDir);
    if (!host.isDirectory) continue;
    if (!isValidHostname(host.name)) {
      problems.push(`${hostDir}: "${host.name}" is not a registry hostname`);
      continue;
    }
    for await (const ns of entries(hostDir, problems)) {
      if (ns.isSymlink) linked(problems, join(hostDir, ns.name));
      if (!ns.isDirectory) continue;
      for await (const type of entries(join(hostDir, ns.name), problems)) {
        const dir = join(hostDir, ns.name, type.name);
        if (type.isSymlink) linked(problems, dir);
        if (!type.isDirectory) continue;
        if (!isValidPart(ns.name) || !isValidPart(type.name)) {
          problems.push(`${dir}: not a valid provider namespace/type`);
          continue;
        }
        if (!config.upstreams.has(host.name)) {
          problems.push(
            `${dir}: registry ${host.name} is not in "upstreams" of the config, so Repoxy would not serve it`,
          );
          continue;
        }
        const p = { hostname: host.name, namespace: ns.name, type: type.name };
        await importProvider(config, cache, dir, p, items, problems, now);
      }
    }
  }
  return items;
}

interface Accepted {
  platforms: PlatformRef[];
  protocols?: string[];
}

async function importProvider(
  config: Config,
  cache: CacheDir,
  dir: string,
  p: ProviderRef,
  items: RegistryItem[],
  problems: string[],
  now: () => number,
): Promise<void> {
  const limit = config.limits.metadataDocumentBytes;
  const listPath = join(dir, VERSIONS);
  let carried: Map<string, VersionEntry> | undefined;
  try {
    if (await lstatOrNone(listPath)) {
      const text = new TextDecoder().decode(await readBounded(listPath, limit));
      carried = new Map(parseVersions(text).map((v) => [v.version, v]));
    }
  } catch (e) {
    // Only its `protocols` would be used: the list is rebuilt from what verified.
    items.push({
      provider: p,
      document: "versions.json",
      source: listPath,
      status: "refused",
      detail: `${(e as Error).message}; the list is built from the download documents instead`,
    });
  }
  const accepted = new Map<string, Accepted>();
  for await (const e of entries(dir, problems)) {
    if (e.name === VERSIONS) continue;
    const vdir = join(dir, e.name);
    if (e.isSymlink) linked(problems, vdir);
    if (!e.isDirectory) continue;
    if (!isValidVersion(e.name)) {
      problems.push(`${vdir}: "${e.name}" is not a version`);
      continue;
    }
    const got = await importVersion(config, cache, vdir, p, e.name, items, problems, now);
    if (got) accepted.set(e.name, got);
  }
  if (accepted.size > 0) await mergeVersions(cache.refs, p, accepted, carried, listPath);
}

function linked(problems: string[], path: string) {
  problems.push(`${path}: a symbolic link; not followed`);
}

/** Checks and stores one version's documents; what was accepted, if anything. */
async function importVersion(
  config: Config,
  cache: CacheDir,
  vdir: string,
  p: ProviderRef,
  version: string,
  items: RegistryItem[],
  problems: string[],
  now: () => number,
): Promise<Accepted | undefined> {
  const limit = config.limits.metadataDocumentBytes;
  const sumsPath = join(vdir, SUMS);
  const sigPath = join(vdir, SIG);
  const sumsItem = (status: RegistryItem["status"], detail: string) =>
    items.push({ provider: p, version, document: "SHA256SUMS", source: sumsPath, status, detail });
  let sums: Uint8Array;
  let sig: Uint8Array | undefined;
  let sumsMap: Map<string, string>;
  try {
    sums = await readBounded(sumsPath, limit);
  } catch (e) {
    const why = e instanceof Deno.errors.NotFound ? "missing" : (e as Error).message;
    sumsItem("refused", `${why}; nothing of this version is stored`);
    return undefined;
  }
  try {
    if (await lstatOrNone(sigPath)) sig = await readBounded(sigPath, MAX_SIGNATURE_BYTES);
  } catch (e) {
    sumsItem("refused", `${SIG}: ${(e as Error).message}; nothing of this version is stored`);
    return undefined;
  }
  try {
    sumsMap = checkSumsFormat(sums);
  } catch (e) {
    if (!(e instanceof IntegrityError)) throw e;
    sumsItem("refused", e.message);
    return undefined;
  }
  const heldSums = await cache.refs.get(refKeys.sums(p, version));
  if (heldSums && !bytesEqual(entryBytes(heldSums), sums)) {
    sumsItem("refused", "the cache already holds a different SHA256SUMS for this version");
    return undefined;
  }

  const trusted = config.upstreams.get(p.hostname)?.trustedKeys ?? [];
  // One verification per distinct key set (every platform's document usually
  // carries the same keys), remembered by digest (a hostile tree's key sets
  // may be megabytes each): digest → why it failed, or "" when it verified.
  const verdicts = new Map<string, string>();
  const fetchedAt = now();
  const entry = (path: string, body: string, encoding?: "base64") => ({
    fetchedAt,
    url: `import:${path}`,
    body,
    ...(encoding ? { encoding } : {}),
  });
  // Stored as each document checks out (no document is held past its turn),
  // SHA256SUMS and .sig before the first: a server running on this cache never
  // offers a document whose SHA256SUMS it lacks.
  let sumsDone = false;
  const storeSums = async () => {
    if (sumsDone) return;
    sumsDone = true;
    if (heldSums) return sumsItem("cached", "already cached with the same bytes");
    if (sig) {
      await cache.refs.put(refKeys.signature(p, version), entry(sigPath, toBase64(sig), "base64"));
    }
    await cache.refs.put(refKeys.sums(p, version), entry(sumsPath, toBase64(sums), "base64"));
    sumsItem("imported", sig ? "signature verified" : "accepted unsigned");
  };
  const accepted: Accepted = { platforms: [] };
  for await (const e of entries(vdir, problems)) {
    if (e.name === SUMS || e.name === SIG) continue;
    const m = DOWNLOAD_RE.exec(e.name);
    const path = join(vdir, e.name);
    if (!m || !isValidOsArch(m[1]!) || !isValidOsArch(m[2]!)) {
      if (e.isSymlink) linked(problems, path);
      continue; // not ours (a later format's file, a note): ignored
    }
    const pl = { os: m[1]!, arch: m[2]! };
    const item = (status: RegistryItem["status"], detail: string) =>
      items.push({
        provider: p,
        version,
        platform: pl,
        document: "download document",
        source: path,
        status,
        detail,
      });
    const refuse = (detail: string) => item("refused", detail);
    let text: string;
    let doc: DownloadDoc;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(await readBounded(path, limit));
      doc = parseDownload(text, pl);
    } catch (e) {
      refuse((e as Error).message);
      continue;
    }
    const offered =
      (Array.isArray(doc.signing_keys?.gpg_public_keys) ? doc.signing_keys.gpg_public_keys : [])
        .map((k) => k?.ascii_armor)
        .filter((k): k is string => typeof k === "string" && k !== "");
    const keySet = trusted.length > 0 ? "" : await digest(JSON.stringify(offered));
    if (!verdicts.has(keySet)) {
      try {
        await checkSumsSignature({
          hostname: p.hostname,
          sums,
          signature: sig,
          offeredKeys: offered,
          trustedKeys: trusted,
        });
        verdicts.set(keySet, "");
      } catch (e) {
        if (!(e instanceof IntegrityError)) throw e;
        verdicts.set(keySet, e.message || "it does not verify");
      }
    }
    const failed = verdicts.get(keySet);
    if (failed) {
      const by = trusted.length > 0 ? "the trustedKeys of the config" : "the signing_keys it names";
      refuse(`${SUMS} is not validly signed by ${by}: ${failed}`);
      continue;
    }
    // Publishers sign every provider's SHA256SUMS with the same key: a release
    // of another provider (or version) filed here would verify. Its file names it.
    const expected = archiveFilename(p.type, version, pl);
    if (doc.filename !== expected) {
      refuse(`its filename ${doc.filename} is not ${expected}, the archive of this release`);
      continue;
    }
    try {
      checkMatchingChecksum(sumsMap, doc.filename, doc.shasum);
    } catch (e) {
      if (!(e instanceof IntegrityError)) throw e;
      refuse(e.message);
      continue;
    }
    const meta = await cache.packages.readMeta(p, version, pl);
    const size = (await cache.storage.stat(cache.packages.keyOf(p, version, pl)))?.size;
    if (!meta || size !== meta.size) {
      refuse("the cache holds no archive of this platform to match it (none imported)");
      continue;
    }
    if (meta.sha256 !== doc.shasum.toLowerCase()) {
      refuse(`its shasum ${doc.shasum} is not the sha256 of the archive (${meta.sha256})`);
      continue;
    }
    const heldDoc = await cache.refs.get(refKeys.download(p, version, pl));
    let held = false;
    if (heldDoc) {
      let heldShasum: string | undefined;
      try {
        heldShasum = parseDownload(heldDoc.body, pl).shasum.toLowerCase();
      } catch { /* unreadable: replaced */ }
      if (heldShasum !== undefined && heldShasum !== doc.shasum.toLowerCase()) {
        refuse("the cache already holds a download document with another shasum");
        continue;
      }
      held = heldShasum !== undefined;
    }
    await storeSums();
    if (held) item("cached", "already cached");
    else {
      await cache.refs.put(refKeys.download(p, version, pl), entry(path, storedDocument(text)));
      item("imported", "matched SHA256SUMS and the archive's sha256");
    }
    accepted.platforms.push(pl);
    if (Array.isArray(doc.protocols) && !accepted.protocols) {
      accepted.protocols = doc.protocols.filter((x): x is string => typeof x === "string");
    }
  }
  if (!sumsDone) {
    sumsItem("refused", "no download document of this version checked out; nothing is stored");
    return undefined;
  }
  return accepted;
}

/** Hex sha256 of a string. */
async function digest(s: string): Promise<string> {
  const d = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(s));
  return Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Adds the accepted versions to the provider's stored version list (or
 * makes one), so the registry protocol offers them. Versions already listed
 * keep their entries; only what verified is added. Kept with time 0 and no
 * validators: an online Repoxy refetches the upstream's list at once, an
 * offline one narrows it to the archives it holds anyway.
 */
async function mergeVersions(
  refs: RefsStore,
  p: ProviderRef,
  accepted: Map<string, Accepted>,
  carried: Map<string, VersionEntry> | undefined,
  source: string,
): Promise<void> {
  const key = refKeys.versions(p);
  const held = await refs.get(key);
  let doc: Record<string, unknown> & { versions: unknown[] } = { versions: [] };
  if (held) {
    try {
      const parsed = JSON.parse(held.body);
      if (parsed && typeof parsed === "object" && Array.isArray(parsed.versions)) doc = parsed;
    } catch { /* unreadable: replaced */ }
  }
  const listed = new Set(
    doc.versions.map((v) => (v as { version?: unknown })?.version).filter((v) =>
      typeof v === "string"
    ),
  );
  const added = [...accepted].filter(([v]) => !listed.has(v)).map(([version, a]) => {
    const c = carried?.get(version);
    const protocols = c?.protocols ?? a.protocols;
    return {
      version,
      ...(protocols ? { protocols } : {}),
      platforms: (c?.platforms ?? a.platforms).map((pl) => ({ os: pl.os, arch: pl.arch })),
    };
  });
  if (added.length === 0) return;
  await refs.put(key, {
    fetchedAt: 0,
    url: `import:${source}`,
    body: JSON.stringify({ ...doc, versions: [...doc.versions, ...added] }),
  });
}
