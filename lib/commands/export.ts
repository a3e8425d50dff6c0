/**
 * `repoxy export DIR`: copies cached archives into a directory that is, at the
 * same time,
 *
 * - a `filesystem_mirror` (the packed layout
 *   `DIR/<host>/<ns>/<type>/terraform-provider-<type>_<ver>_<os>_<arch>.zip`), and
 * - a static `network_mirror` (`index.json` and `<version>.json` beside the
 *   zips, with relative `url`s and both `h1:` and `zh:` hashes), listing only
 *   what was exported,
 *
 * and that `repoxy import` on an air-gapped host checks hash by hash. Beside
 * the hostnames, a dot-named sidecar (`DIR/.repoxy/`, which mirror readers
 * skip) carries what the registry protocol serves for each exported version:
 * the version list, the download documents with their signing keys, and the
 * signed SHA256SUMS with its `.sig` (see registry_docs.ts).
 * @module
 */
import { createLogger, type Logger } from "../base/log.ts";
import type { OpenObject } from "../cache/storage.ts";
import type { StorageConfig } from "../config/storage_config.ts";
import { createHash } from "../deps/crypto.ts";
import { openCommandCache } from "./command_storage.ts";
import { type CachedFile, scanPackages } from "../cache/scan.ts";
import { copyHashed } from "../integrity/hashing.ts";
import { providerDir } from "../protocol/packed_layout.ts";

import {
  type Command,
  COMMON_HELP,
  defineCommand,
  EXIT_FAILED,
  EXIT_OK,
  EXIT_USAGE,
  flagStrings,
  Progress,
} from "./cli.ts";
import { dirname, join, resolve } from "../deps/path.ts";
import { hashZipH1 } from "../integrity/dirhash.ts";
import { mirrorIndexJson, mirrorVersionJson } from "../protocol/mirror_json.ts";
import {
  type PlatformRef,
  platformString,
  type ProviderRef,
  providerString,
} from "../protocol/names.ts";
import { exportRegistryDocs } from "./registry_docs.ts";
import { exportModules } from "./module_ops.ts";
import {
  ArgumentError,
  parsePlatform,
  parseProviderAddress,
  type ProviderTarget,
} from "../protocol/provider_address.ts";
import { formatSize } from "../base/size.ts";

/** Options of {@link exportCache}. */
export interface ExportOptions {
  /** Only these providers (and versions, when given); default all. */
  providers?: ProviderTarget[];
  /** Only these platforms; default all. */
  platforms?: PlatformRef[];
  progress?: Progress;
  /** Where warnings go (default: stderr, warnings and errors only). */
  log?: Logger;
  /**
   * The shared bucket (`storage.kind: "s3"`): the export holds what the
   * fleet holds, read from this host's local tier where it has the archive
   * and streamed from the bucket otherwise.
   */
  storage?: StorageConfig;
}

/** What an export did. */
export interface ExportReport {
  archives: number;
  bytes: number;
  providers: number;
  /** Archives left out because their bytes differ from their record (the command fails). */
  problems: string[];
  /** Files left out because nothing vouches for them (they are not served either). */
  skipped: string[];
  /** Versions whose registry documents went into the sidecar. */
  registryVersions: number;
  /**
   * Exported versions (or platforms) without registry documents in the
   * cache: they install from the tree through the mirror protocols only.
   */
  mirrorOnly: string[];
  /** Module versions written to `.repoxy/modules/` (all of them, unless providers were named). */
  modules: number;
  moduleBytes: number;
}

let seq = 0;
function hiddenTemp(path: string): string {
  // Dot-prefixed like Terraform's own staging files: mirror readers skip them.
  return join(dirname(path), `.${path.slice(dirname(path).length + 1)}.tmp-${Deno.pid}-${seq++}`);
}

async function writeAtomically(path: string, data: string | Uint8Array): Promise<void> {
  const tmp = hiddenTemp(path);
  try {
    {
      using f = await Deno.open(tmp, { write: true, createNew: true });
      const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
      let off = 0;
      while (off < bytes.length) off += await f.write(bytes.subarray(off));
      await f.syncData();
    }
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}

/** Copies an open stored object to `to` (atomically, fsynced); returns the sha256 written. */
async function copyObjectInto(from: OpenObject, to: string): Promise<string> {
  const tmp = hiddenTemp(to);
  try {
    const h = createHash("sha256");
    {
      using f = await Deno.open(tmp, { write: true, createNew: true });
      const buf = new Uint8Array(1 << 20);
      for (let n = await from.read(buf); n !== null; n = await from.read(buf)) {
        const chunk = buf.subarray(0, n);
        h.update(chunk);
        let off = 0;
        while (off < n) off += await f.write(chunk.subarray(off));
      }
      await f.syncData();
    }
    await Deno.rename(tmp, to);
    return h.digest("hex");
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  } finally {
    from.close();
  }
}

/** Copies `from` to `to` (atomically) and returns the sha256 of the bytes written. */
async function copyInto(from: string, to: string): Promise<string> {
  const tmp = hiddenTemp(to);
  try {
    const { sha256 } = await copyHashed(from, tmp);
    await Deno.rename(tmp, to);
    return sha256;
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}

function wanted(f: CachedFile, opts: ExportOptions): boolean {
  if (
    opts.platforms &&
    !opts.platforms.some((pl) => platformString(pl) === platformString(f.platform))
  ) {
    return false;
  }
  if (!opts.providers || opts.providers.length === 0) return true;
  return opts.providers.some((t) =>
    providerString(t.provider) === providerString(f.provider) &&
    (t.version === undefined || t.version === f.version)
  );
}

/**
 * Exports the cache into `outDir`, which must not exist or be empty (so that
 * its index files list exactly what it holds).
 *
 * @throws {ArgumentError} when `outDir` is not empty
 */
export async function exportCache(
  cacheDir: string,
  outDir: string,
  opts: ExportOptions = {},
): Promise<ExportReport> {
  try {
    for await (const _ of Deno.readDir(outDir)) {
      throw new ArgumentError(`"${outDir}" is not empty; export into a new or empty directory`);
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  await Deno.mkdir(outDir, { recursive: true });

  await using cmd = await openCommandCache(
    cacheDir,
    opts.storage,
    opts.log ?? createLogger("text", undefined, "warn"),
    { create: opts.storage !== undefined },
  );
  const { cache, tier } = cmd;
  const files: CachedFile[] = [];
  const all = tier
    ? (await import("../storage_s3/bucket_maintenance.ts")).listBucketArchives(tier.bucket)
    : scanPackages(cache.storage);
  for await (const f of await all) if (wanted(f, opts)) files.push(f);
  const report: ExportReport = {
    archives: 0,
    bytes: 0,
    providers: 0,
    problems: [],
    skipped: [],
    registryVersions: 0,
    mirrorOnly: [],
    modules: 0,
    moduleBytes: 0,
  };
  // provider dir → version → archives
  const listing = new Map<
    string,
    Map<string, Array<{ platform: PlatformRef; url: string; hashes: string[] }>>
  >();
  const providerOf = new Map<string, ProviderRef>();
  let done = 0;
  for (const f of files) {
    opts.progress?.update(done, files.length, `archives  ${formatSize(report.bytes)}`);
    done++;
    const name = `${providerString(f.provider)} ${f.version} ${platformString(f.platform)}`;
    const meta = await cache.packages.readMeta(f.provider, f.version, f.platform);
    const path = tier ? tier.bucket.locate(f.key) : cache.storage.pathOf(f.key);
    if (!meta || meta.size !== f.size) {
      // Not served either: a download's leftover or a file nothing vouches for.
      report.skipped.push(`${name}: skipped, the cache holds no matching record for ${path}`);
      continue;
    }
    const dir = join(outDir, providerDir(f.provider));
    await Deno.mkdir(dir, { recursive: true });
    const dest = join(dir, f.filename);
    let sha256: string;
    try {
      if (tier) {
        // This host's copy when it has one (disk speed), else the bucket's
        // (read directly: an export does not fill the local tier).
        const object = await cache.storage.open(f.key) ?? await tier.bucket.open(f.key);
        if (!object) throw new Deno.errors.NotFound(f.key);
        sha256 = await copyObjectInto(object, dest);
      } else sha256 = await copyInto(path, dest);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
      report.skipped.push(`${name}: skipped, evicted while exporting`);
      continue;
    }
    if (!tier) await cache.storage.restoreTimes(f);
    if (sha256 !== meta.sha256) {
      await Deno.remove(dest).catch(() => {});
      report.problems.push(
        `${name}: NOT exported, its bytes (sha256 ${sha256}) differ from the record (${meta.sha256}); run "repoxy verify"`,
      );
      continue;
    }
    // Same bytes as recorded, so the recorded h1 holds; compute it only if missing.
    const h1 = meta.h1 ?? await hashZipH1(dest);
    const versions = listing.get(dir) ?? new Map();
    listing.set(dir, versions);
    providerOf.set(dir, f.provider);
    const archives = versions.get(f.version) ?? [];
    versions.set(f.version, archives);
    archives.push({
      platform: f.platform,
      url: f.filename,
      hashes: [h1, `zh:${sha256}`],
    });
    report.archives++;
    report.bytes += f.size;
  }
  opts.progress?.update(done, files.length, `archives  ${formatSize(report.bytes)}`, true);
  for (const [dir, versions] of listing) {
    for (const [version, archives] of versions) {
      await writeAtomically(
        join(dir, `${version}.json`),
        mirrorVersionJson(archives.map((a) => ({ ...a, platform: platformString(a.platform) }))),
      );
    }
    await writeAtomically(join(dir, "index.json"), mirrorIndexJson([...versions.keys()]));
    const side = await exportRegistryDocs(
      cache.refs,
      outDir,
      providerOf.get(dir)!,
      new Map([...versions].map(([v, archives]) => [v, archives.map((a) => a.platform)])),
      async (path, bytes) => {
        await Deno.mkdir(dirname(path), { recursive: true });
        await writeAtomically(path, bytes);
      },
    );
    report.registryVersions += side.versions;
    report.mirrorOnly.push(...side.notes);
    report.providers++;
  }
  if (!opts.providers?.length) {
    const m = await exportModules(cache, outDir);
    report.modules = m.exported;
    report.moduleBytes = m.bytes;
    report.problems.push(...m.problems);
  }
  return report;
}

const HELP = `Usage: repoxy export [options] DIR [PROVIDER[@VERSION]]...

Copies cached archives into DIR (which must not exist or be empty), laid out as
"terraform providers mirror" does, plus index.json and <version>.json files with
h1: and zh: hashes, plus DIR/.repoxy/: the registry protocol's documents of each
exported version (version list, download documents with the signing keys, the
signed SHA256SUMS and its .sig; presigned URLs redacted). DIR then works as:
  - a filesystem_mirror:      provider_installation { filesystem_mirror { path = "DIR" } }
  - a static network_mirror:  serve DIR over HTTPS, network_mirror { url = "https://host/" }
  - input to "repoxy import DIR" on another (e.g. air-gapped) Repoxy, which then
    serves both the network mirror and the registry protocol (host blocks).

Arguments:
  DIR                  the directory to write
  PROVIDER[@VERSION]   only these providers ([HOSTNAME/]NAMESPACE/TYPE); default all

Options:
  -p, --platform OS_ARCH  only this platform, repeatable (default: all cached)
${COMMON_HELP}

With "storage.kind": "s3", DIR gets what the bucket holds (the whole fleet's
cache): archives this host has are read from its local tier, the others are
streamed from the bucket.

Every archive's sha256 is checked against its record while it is copied; a
mismatch is left out and reported. Exit codes: 0 ok, 1 something was left out,
2 bad arguments or config.`;

/** `repoxy export`. */
export const exportCommand: Command = defineCommand({
  name: "export",
  summary: "write cached providers as a filesystem/network mirror directory",
  help: HELP,
  options: { platform: { type: "string", short: "p", multiple: true } },
  positionals: { min: 1, usage: "missing DIR" },
  async run({ args: parsed, config, io }) {
    const [outArg, ...providerArgs] = parsed.positionals as [string, ...string[]];
    const outDir = resolve(outArg);
    const progress = new Progress(io);
    let report: ExportReport;
    try {
      const opts: ExportOptions = {
        providers: providerArgs.map((a) => parseProviderAddress(a, config.defaultUpstream)),
        progress,
      };
      const platforms = flagStrings(parsed, "platform").map(parsePlatform);
      if (platforms.length > 0) opts.platforms = platforms;
      if (config.storage) opts.storage = config.storage;
      report = await exportCache(config.cacheDir, outDir, opts);
    } catch (e) {
      if (e instanceof ArgumentError) {
        progress.done();
        io.err(`repoxy export: ${e.message}`);
        return EXIT_USAGE;
      }
      throw e;
    }
    progress.done();
    for (const s of report.skipped) io.err(`repoxy export: note: ${s}`);
    for (const n of report.mirrorOnly) io.err(`repoxy export: note: ${n}`);
    for (const p of report.problems) io.err(`repoxy export: ${p}`);
    io.out(
      `export: ${report.archives} archive(s) of ${report.providers} provider(s) (${
        formatSize(report.bytes)
      }) written to ${outDir}; registry protocol documents of ${report.registryVersions} version(s); ` +
        `${report.modules} module version(s) (${formatSize(report.moduleBytes)})`,
    );
    return report.problems.length > 0 ? EXIT_FAILED : EXIT_OK;
  },
});
