/**
 * `repoxy import DIR`: ingests a mirror directory (from `repoxy export` or
 * plain `terraform providers mirror` / `tofu providers mirror`) into the cache.
 *
 * Trust comes from the hashes the directory lists: each zip must match the
 * `zh:` (sha256 of the zip) and `h1:` (hash of its contents) entries that its
 * `<version>.json` gives for its platform. `terraform providers mirror` writes
 * only `h1:`, `repoxy export` both. A zip with nothing listed is refused unless
 * the operator says `--trust-unlisted`: the hashes Repoxy then records (and
 * clients pin in their lock files) come from the zip itself.
 *
 * Hashes are computed on the copy inside the cache's temp dir, so what was
 * checked is exactly what gets stored; the copy enters `packages/` by rename,
 * after its meta record, as downloads do.
 *
 * Then the sidecar `repoxy export` writes (`DIR/.repoxy/`, see
 * registry_docs.ts) brings the registry protocol's documents, each checked
 * as serving checks them (signature over SHA256SUMS, its line for the
 * archive, the archive's sha256) before it enters `refs/`.
 * @module
 */
import { copyHashed } from "../integrity/hashing.ts";
import {
  type Command,
  COMMON_HELP,
  defineCommand,
  EXIT_FAILED,
  EXIT_OK,
  EXIT_USAGE,
  flagBool,
  Progress,
} from "./cli.ts";
import type { Config } from "../config/config.ts";
import { join, resolve } from "../deps/path.ts";
import { checkListedH1, checkListedZh, IntegrityError } from "../integrity/checks.ts";
import { hashZipH1 } from "../integrity/dirhash.ts";
import {
  isValidHostname,
  isValidPart,
  isValidVersion,
  parseArchiveFilename,
  type PlatformRef,
  type ProviderRef,
} from "../protocol/names.ts";
import type { ArchiveMeta } from "../cache/archive_meta.ts";
import { createLogger, type Logger } from "../base/log.ts";
import type { CacheDir } from "../cache/cache_dir.ts";
import type { Storage } from "../cache/storage.ts";
import { openCommandCache } from "./command_storage.ts";
import { platformString, providerString } from "../protocol/names.ts";
import { formatSize } from "../base/size.ts";
import { entries, kindOf, readBounded } from "./tree_files.ts";
import { importRegistryDocs, type RegistryItem, registryItemName } from "./registry_docs.ts";
import { importModules } from "./module_ops.ts";

/** Outcome for one zip of the source tree. */
export interface ImportItem {
  source: string;
  provider: ProviderRef;
  version: string;
  platform: PlatformRef;
  status: "imported" | "cached" | "refused";
  bytes: number;
  /** Why it was refused, or which hashes it was checked against. */
  detail: string;
}

/** What an import did. */
export interface ImportReport {
  items: ImportItem[];
  /** The registry protocol's documents from the tree's sidecar (none for an older tree). */
  registry: RegistryItem[];
  /** Things in the tree that are not importable at all (wrong layout, bad names). */
  problems: string[];
  /** Module versions from the sidecar (`.repoxy/modules/`): counts, and each refusal. */
  modules: { imported: number; cached: number; refused: string[] };
}

/** Options of {@link importTree}. */
export interface ImportOptions {
  /** Accept zips whose version JSON lists no hash for them. */
  trustUnlisted?: boolean;
  progress?: Progress;
  now?: () => number;
  /** Where warnings go (default: stderr, warnings and errors only). */
  log?: Logger;
}

/** Version JSONs of one provider dir kept parsed at once (see importTree). */
const LISTINGS_KEPT = 8;

type Listed = { hashes: Map<string, string[]> } | { error: string };

/**
 * Reads `<version>.json` of one provider dir: platform → listed hashes.
 * Undefined when there is none.
 */
async function readListing(
  dir: string,
  version: string,
  limit: number,
): Promise<Listed | undefined> {
  const name = `${version}.json`;
  const path = join(dir, name);
  try {
    await Deno.lstat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    return { error: `${path}: ${(e as Error).message}` };
  }
  let bytes: Uint8Array;
  try {
    bytes = await readBounded(path, limit);
  } catch (e) {
    return { error: `${path} refused: ${(e as Error).message}` };
  }
  try {
    const doc = JSON.parse(new TextDecoder().decode(bytes));
    const archives = doc?.archives;
    if (!archives || typeof archives !== "object" || Array.isArray(archives)) {
      throw new Error(`no "archives" object`);
    }
    const hashes = new Map<string, string[]>();
    for (const [platform, a] of Object.entries(archives as Record<string, unknown>)) {
      const list = (a as { hashes?: unknown })?.hashes;
      hashes.set(
        platform,
        Array.isArray(list) ? list.filter((h): h is string => typeof h === "string") : [],
      );
    }
    return { hashes };
  } catch (e) {
    return { error: `${name} is malformed: ${(e as Error).message}` };
  }
}

/**
 * Imports every `<host>/<ns>/<type>/*.zip` under `srcDir` into the cache of
 * `config`. Never throws for one bad zip: it is refused and reported.
 *
 * A hostile tree cannot hurt it: only regular files are read (a symbolic
 * link, FIFO, device or socket named like a zip or a version JSON is refused
 * by name, from `lstat`, without being opened), archives are bounded by
 * `limits.archiveSize` and version JSONs by `limits.metadataDocument`, links
 * to directories are not followed, and directories are read as streams.
 */
export async function importTree(
  config: Config,
  srcDir: string,
  opts: ImportOptions = {},
): Promise<ImportReport> {
  const now = opts.now ?? Date.now;
  const report: ImportReport = {
    items: [],
    registry: [],
    problems: [],
    modules: { imported: 0, cached: 0, refused: [] },
  };
  // With a bucket, archives go to it through the same verified commit.
  const cmd = await openCommandCache(
    config.cacheDir,
    config.storage,
    opts.log ?? createLogger("text", undefined, "warn"),
    { create: true },
  );
  const { cache, shared } = cmd;
  let done = 0;
  let bytes = 0;
  const linked = (path: string) => report.problems.push(`${path}: a symbolic link; not followed`);
  try {
    for await (const host of entries(srcDir, report.problems)) {
      const hostDir = join(srcDir, host.name);
      if (host.isSymlink) {
        linked(hostDir);
        continue;
      }
      if (!host.isDirectory) continue;
      if (!isValidHostname(host.name)) {
        report.problems.push(
          `${hostDir}: "${host.name}" is not a registry hostname Repoxy serves (lowercase, punycode for IDNs)`,
        );
        continue;
      }
      for await (const ns of entries(hostDir, report.problems)) {
        if (ns.isSymlink) linked(join(hostDir, ns.name));
        if (!ns.isDirectory) continue;
        for await (const type of entries(join(hostDir, ns.name), report.problems)) {
          const dir = join(hostDir, ns.name, type.name);
          if (type.isSymlink) linked(dir);
          if (!type.isDirectory) continue;
          if (!isValidPart(ns.name) || !isValidPart(type.name)) {
            report.problems.push(`${dir}: not a valid provider namespace/type`);
            continue;
          }
          const p = { hostname: host.name, namespace: ns.name, type: type.name };
          // The last few version JSONs read, so the zips of one version cost
          // one read; bounded, as each may be a whole limits.metadataDocument.
          const listings = new Map<string, Listed | undefined>();
          const listing = async (version: string) => {
            if (!listings.has(version)) {
              if (listings.size >= LISTINGS_KEPT) listings.delete(listings.keys().next().value!);
              listings.set(
                version,
                await readListing(dir, version, config.limits.metadataDocumentBytes),
              );
            }
            return listings.get(version);
          };
          for await (const e of entries(dir, report.problems)) {
            if (e.isDirectory) {
              report.problems.push(
                `${
                  join(dir, e.name)
                }: the unpacked layout is not supported; use the packed layout (zips) that "terraform providers mirror" writes`,
              );
              continue;
            }
            if (!e.name.endsWith(".zip")) continue;
            if (!parseArchiveFilename(p.type, e.name)) {
              report.problems.push(
                `${join(dir, e.name)}: not named terraform-provider-${p.type}_VERSION_OS_ARCH.zip`,
              );
              continue;
            }
            opts.progress?.update(done, done, `archives  ${formatSize(bytes)}`);
            const item = await importOne(config, cache, shared, dir, p, e.name, listing, opts, now);
            report.items.push(item);
            if (item.status === "imported") bytes += item.bytes;
            done++;
          }
        }
      }
    }
    opts.progress?.update(done, done, `archives  ${formatSize(bytes)}`, true);
    // After the archives: a download document is only accepted for an archive the cache holds.
    report.registry = await importRegistryDocs(config, cache, srcDir, report.problems, now);
    report.modules = await importModules(config, cache, srcDir, report.problems);
  } finally {
    await cmd[Symbol.asyncDispose]();
  }
  return report;
}

/**
 * Copies a regular file into `to` while hashing it, refusing more than
 * `limit` bytes. The source is checked with `lstat` before it is opened (a
 * FIFO would block the open) and with `fstat` after (it is the same file).
 */
async function copyBounded(
  from: string,
  to: string,
  limit: number,
): Promise<{ sha256: string; size: number }> {
  const st = await Deno.lstat(from);
  if (!st.isFile) throw new Error(`${kindOf(st)}, not read`);
  if (st.size > limit) {
    throw new Error(`${st.size} bytes, over limits.archiveSize (${limit} bytes)`);
  }
  using src = await Deno.open(from, { read: true });
  const held = await src.stat();
  if (!held.isFile || held.ino !== st.ino || held.dev !== st.dev) {
    throw new Error("replaced while being imported");
  }
  return await copyHashed(src, to, limit);
}

async function importOne(
  config: Config,
  cache: CacheDir,
  shared: Storage,
  dir: string,
  p: ProviderRef,
  zip: string,
  listingOf: (version: string) => Promise<Listed | undefined>,
  opts: ImportOptions,
  now: () => number,
): Promise<ImportItem> {
  const parsed = parseArchiveFilename(p.type, zip)!;
  const pl = { os: parsed.os, arch: parsed.arch };
  const version = parsed.version;
  const source = join(dir, zip);
  const item: ImportItem = {
    source,
    provider: p,
    version,
    platform: pl,
    status: "refused",
    bytes: 0,
    detail: "",
  };
  const refuse = (detail: string) => ({ ...item, status: "refused" as const, detail });
  if (!config.upstreams.has(p.hostname)) {
    return refuse(
      `registry ${p.hostname} is not in "upstreams" of the config, so Repoxy would not serve it`,
    );
  }
  // Before anything reads it: only a regular file of a bounded size.
  let st: Deno.FileInfo;
  try {
    st = await Deno.lstat(source);
  } catch (e) {
    return refuse((e as Error).message);
  }
  if (!st.isFile) return refuse(`${source} is ${kindOf(st)}; only regular files are imported`);
  if (st.size > config.limits.archiveBytes) {
    return refuse(
      `${source} has ${st.size} bytes, over limits.archiveSize (${config.limits.archiveBytes} bytes)`,
    );
  }
  const listing = isValidVersion(version) ? await listingOf(version) : undefined;
  if (listing && "error" in listing) return refuse(listing.error);
  const listed = listing?.hashes.get(platformString(pl)) ?? [];
  const zh = listed.filter((h) => h.startsWith("zh:")).map((h) => h.slice(3).toLowerCase());
  const h1s = listed.filter((h) => h.startsWith("h1:"));
  if (zh.length === 0 && h1s.length === 0 && !opts.trustUnlisted) {
    return refuse(
      `${version}.json lists no h1: or zh: hash for ${
        platformString(pl)
      }, so it cannot be checked (--trust-unlisted accepts it as is)`,
    );
  }

  const tmp = cache.storage.tempPath(zip);
  try {
    const { sha256, size } = await copyBounded(source, tmp, config.limits.archiveBytes);
    item.bytes = size;
    let h1: string;
    try {
      checkListedZh(sha256, listed, `${version}.json`);
      try {
        h1 = await hashZipH1(tmp);
      } catch (e) {
        return refuse(`not a readable zip archive: ${(e as Error).message}`);
      }
      checkListedH1(h1, listed, `${version}.json`);
    } catch (e) {
      if (e instanceof IntegrityError) return refuse(e.message);
      throw e;
    }
    const checked = [zh.length > 0 ? "zh:" : "", h1s.length > 0 ? "h1:" : ""].filter(Boolean);

    const existing = await cache.packages.readMeta(p, version, pl);
    const existingSize = (await shared.stat(cache.packages.keyOf(p, version, pl)))?.size;
    if (existing && existingSize === existing.size) {
      if (existing.sha256 === sha256) {
        return { ...item, status: "cached", detail: "already cached with the same sha256" };
      }
      return refuse(
        `the cache already holds different bytes for it (sha256 ${existing.sha256}, from ${existing.url})`,
      );
    }

    const meta: ArchiveMeta = {
      sha256,
      size,
      h1,
      cachedAt: now(),
      url: `import:${source}`,
    };
    await cache.packages.commit(p, version, pl, tmp, meta);
    return {
      ...item,
      status: "imported",
      detail: checked.length > 0
        ? `matched ${checked.join(" and ")}`
        : "trusted without a listed hash",
    };
  } catch (e) {
    return refuse((e as Error).message);
  } finally {
    await Deno.remove(tmp).catch(() => {});
  }
}

const HELP = `Usage: repoxy import [options] DIR

Copies provider archives from a mirror directory into the cache, so this Repoxy
serves them (also with "offline": true). DIR is the output of "repoxy export" or
of "terraform providers mirror" / "tofu providers mirror" (packed layout:
DIR/HOST/NAMESPACE/TYPE/terraform-provider-TYPE_VERSION_OS_ARCH.zip).

Every zip is checked against the hashes its VERSION.json lists for its platform:
its sha256 against zh: entries and its contents against h1: entries ("repoxy
export" writes both, "terraform providers mirror" writes h1:). A mismatch is
refused. A zip with no listed hash is refused too, unless:

      --trust-unlisted   accept zips that have no listed hash, as they are; their
                         hashes are then computed from the zip itself (and are
                         what clients will pin), so use it only for a directory
                         you made yourself and carried safely
${COMMON_HELP}

Only regular files are read: a zip or VERSION.json that is a symbolic link,
FIFO, device or socket is refused without being opened, and so is a zip over
"limits.archiveSize" or a VERSION.json over "limits.metadataDocument" of the
config. Linked directories are reported and not followed.

A tree written by "repoxy export" also carries DIR/.repoxy/: the registry
protocol's documents (version list, download documents, signed SHA256SUMS and
.sig), so that "host" blocks work offline too. They are stored only if
SHA256SUMS's signature verifies with the signing keys a download document
carries (or the upstream's "trustedKeys" from the config, which replace them),
the document's shasum is SHA256SUMS' line for its archive, and the archive
imported (or already cached) for that platform has that sha256. Anything else is
refused by name; its archive stays served through the network mirror protocol.

Archives already cached with the same bytes are skipped. Exit codes: 0 all
imported or present, 1 something was refused (each is named), 2 bad arguments
or config.`;

/** `repoxy import`. */
export const importCommand: Command = defineCommand({
  name: "import",
  summary: "ingest a mirror directory (repoxy export, terraform providers mirror)",
  help: HELP,
  options: { "trust-unlisted": { type: "boolean" } },
  positionals: { min: 1, max: 1, usage: "expected exactly one DIR" },
  async run({ args: parsed, config, io }) {
    const srcDir = resolve(parsed.positionals[0]!);
    try {
      if (!(await Deno.stat(srcDir)).isDirectory) throw new Error("not a directory");
    } catch (e) {
      io.err(`repoxy import: cannot read "${srcDir}": ${(e as Error).message}`);
      return EXIT_USAGE;
    }
    const progress = new Progress(io);
    const report = await importTree(config, srcDir, {
      trustUnlisted: flagBool(parsed, "trust-unlisted"),
      progress,
    });
    progress.done();
    for (const p of report.problems) io.err(`repoxy import: ${p}`);
    for (const i of report.items) {
      const name = `${providerString(i.provider)} ${i.version} ${platformString(i.platform)}`;
      if (i.status === "refused") {
        io.err(`repoxy import: REFUSED ${name} (${i.source}): ${i.detail}`);
      } else if (i.detail === "trusted without a listed hash") {
        io.err(`repoxy import: note: ${name} imported without a listed hash (--trust-unlisted)`);
      }
    }
    const n = (s: ImportItem["status"]) => report.items.filter((i) => i.status === s).length;
    const bytes = report.items.filter((i) => i.status === "imported").reduce(
      (a, i) => a + i.bytes,
      0,
    );
    io.out(
      `import: ${report.items.length} archive(s): ${n("imported")} imported (${
        formatSize(bytes)
      }), ` +
        `${n("cached")} already cached, ${n("refused")} refused`,
    );
    for (const r of report.registry) {
      if (r.status === "refused") {
        io.err(`repoxy import: REFUSED ${registryItemName(r)} (${r.source}): ${r.detail}`);
      }
    }
    const docs = (s: RegistryItem["status"]) =>
      report.registry.filter((r) => r.status === s && r.document !== "versions.json").length;
    if (report.registry.length > 0) {
      io.out(
        `import: registry protocol documents: ${docs("imported")} imported, ${
          docs("cached")
        } already cached, ${report.registry.filter((r) => r.status === "refused").length} refused`,
      );
    }
    for (const r of report.modules.refused) io.err(`repoxy import: REFUSED module ${r}`);
    const mods = report.modules;
    if (mods.imported + mods.cached + mods.refused.length > 0) {
      io.out(
        `import: modules: ${mods.imported} imported, ${mods.cached} already cached, ${mods.refused.length} refused`,
      );
    }
    const refused = n("refused") + report.registry.filter((r) => r.status === "refused").length +
      mods.refused.length;
    return refused > 0 || report.problems.length > 0 ? EXIT_FAILED : EXIT_OK;
  },
});
