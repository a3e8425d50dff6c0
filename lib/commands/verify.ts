/**
 * `repoxy verify`: re-hashes every cached archive against its meta record
 * (size, sha256, and h1 when recorded). A mismatch, such as a flipped bit on
 * disk or a file changed by hand, is moved to `<cacheDir>/quarantine/` with a
 * note of what was expected, and its record is dropped, so the next request
 * fetches a good copy from the upstream.
 * @module
 */
import { createLogger, type Logger } from "../base/log.ts";
import { openCacheDir } from "../cache/cache_dir.ts";
import { makeDirsInside } from "../cache/disk_storage.ts";
import { type CachedFile, scanPackages } from "../cache/scan.ts";
import { packedArchivePath } from "../protocol/packed_layout.ts";
import { type Command, COMMON_HELP, defineCommand, EXIT_FAILED, EXIT_OK, Progress } from "./cli.ts";
import { sha256File } from "../integrity/hashing.ts";
import { join } from "../deps/path.ts";
import { hashZipH1 } from "../integrity/dirhash.ts";
import type { ArchiveMeta } from "../cache/archive_meta.ts";
import { platformString, providerString } from "../protocol/names.ts";
import { formatSize } from "../base/size.ts";
import { openCommandCache } from "./command_storage.ts";
import type { CliIo } from "./cli.ts";
import type { Config } from "../config/config.ts";
import { type ModuleVerifyReport, verifyModules } from "./module_ops.ts";

/** A cached archive and its file on the local disk. */
export type LocalFile = CachedFile & { path: string };

/** One archive that failed verification. */
export interface Mismatch {
  file: LocalFile;
  reason: string;
  /** Where the file now is. */
  quarantined: string;
}

/** What a verify run found. */
export interface VerifyReport {
  checked: number;
  bytes: number;
  mismatches: Mismatch[];
  /** Archive files without a record: never served, so not judged (prune may evict them). */
  unrecorded: LocalFile[];
  /** The module archives (`modules/`), checked the same way. */
  modules: ModuleVerifyReport;
}

async function check(f: LocalFile, meta: ArchiveMeta): Promise<string | undefined> {
  if (f.size !== meta.size) return `size is ${f.size} bytes, recorded ${meta.size}`;
  const got = await sha256File(f.path);
  if (got.size !== meta.size) return `size is ${got.size} bytes, recorded ${meta.size}`;
  if (got.sha256 !== meta.sha256) return `sha256 is ${got.sha256}, recorded ${meta.sha256}`;
  if (meta.h1) {
    let h1: string;
    try {
      h1 = await hashZipH1(f.path);
    } catch (e) {
      return `not a readable zip: ${(e as Error).message}`;
    }
    if (h1 !== meta.h1) return `contents hash to ${h1}, recorded ${meta.h1}`;
  }
  return undefined;
}

/**
 * Verifies every cached archive. Mismatches are quarantined as
 * `quarantine/<host>/<ns>/<type>/<file>.<time>` with a `.json` note beside.
 */
export async function verifyCache(
  cacheDir: string,
  opts: { progress?: Progress; now?: () => number; log?: Logger } = {},
): Promise<VerifyReport> {
  const now = opts.now ?? Date.now;
  await using cache = await openCacheDir(
    cacheDir,
    opts.log ?? createLogger("text", undefined, "warn"),
    { create: false },
  );
  const files: LocalFile[] = [];
  for await (const f of scanPackages(cache.storage)) {
    files.push({ ...f, path: cache.storage.pathOf(f.key) });
  }
  const total = files.reduce((n, f) => n + f.size, 0);
  const report: VerifyReport = {
    checked: 0,
    bytes: 0,
    mismatches: [],
    unrecorded: [],
    modules: { checked: 0, bytes: 0, mismatches: [] },
  };
  for (const f of files) {
    opts.progress?.update(
      report.checked,
      files.length,
      `archives  ${formatSize(report.bytes)} of ${formatSize(total)}`,
    );
    const meta = await cache.packages.readMeta(f.provider, f.version, f.platform);
    if (!meta) {
      report.unrecorded.push(f);
      continue;
    }
    let reason: string | undefined;
    try {
      reason = await check(f, meta);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) continue; // evicted meanwhile
      reason = `cannot read it: ${(e as Error).message}`;
    }
    report.checked++;
    report.bytes += f.size;
    if (!reason) {
      await cache.storage.restoreTimes(f);
      continue;
    }
    const stamp = new Date(now()).toISOString().replace(/[:.]/g, "-");
    const dest = join(
      cacheDir,
      "quarantine",
      `${packedArchivePath(f.provider, f.version, f.platform)}.${stamp}`,
    );
    // Made without following links: a planted quarantine/ link must not carry
    // the file (or the note below) out of the cache.
    const linked = await makeDirsInside(
      cacheDir,
      [
        "quarantine",
        ...packedArchivePath(f.provider, f.version, f.platform).split("/").slice(0, -1),
      ],
    );
    // The file goes first: with the record still there but no file, a server
    // sees "not cached" and downloads again, never serves the bad bytes.
    try {
      // With no quarantine to keep it in, the bad file is removed instead.
      if (linked) await Deno.remove(f.path);
      else await Deno.rename(f.path, dest);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) continue; // evicted meanwhile
      throw e;
    }
    await cache.packages.dropMeta(f.provider, f.version, f.platform, meta);
    if (linked) {
      report.mismatches.push({
        file: f,
        reason,
        quarantined: `nowhere (removed: ${linked} is not a directory of the cache)`,
      });
      continue;
    }
    await Deno.writeTextFile(
      dest + ".json",
      JSON.stringify({ path: f.path, reason, recorded: meta, quarantinedAt: now() }, null, 2) +
        "\n",
      { createNew: true }, // never through a link planted under that name
    );
    report.mismatches.push({ file: f, reason, quarantined: dest });
  }
  opts.progress?.update(
    report.checked,
    files.length,
    `archives  ${formatSize(report.bytes)}`,
    true,
  );
  report.modules = await verifyModules(cache, now);
  return report;
}

const HELP = `Usage: repoxy verify [options]

Re-hashes every cached archive (size, sha256 and h1) against what was recorded
when it was stored. Mismatches are moved to <cacheDir>/quarantine/ (with a .json
note of what was expected; removed instead when quarantine/ is not a real
directory of the cache, e.g. a planted link) and their records dropped, so the
next request downloads a good copy. Safe to run next to a live server.

With "storage.kind": "s3", the bucket's archives are re-hashed too (streamed
from the bucket, against the record the fleet shares): a mismatch is copied
to <prefix>/quarantine/ in the bucket with a .json note and deleted from
<prefix>/packages/, so no replica serves or fills from it again.

Options:
${COMMON_HELP}

Exit codes: 0 every archive matches, 1 mismatches were found (each is named),
2 bad arguments or config.`;

/** `repoxy verify`. */
export const verifyCommand: Command = defineCommand({
  name: "verify",
  summary: "re-hash cached archives and quarantine mismatches",
  help: HELP,
  positionals: { max: 0 },
  async run({ config, io }) {
    const progress = new Progress(io);
    const report = await verifyCache(config.cacheDir, { progress });
    progress.done();
    for (const m of report.mismatches) {
      const name = `${providerString(m.file.provider)} ${m.file.version} ${
        platformString(m.file.platform)
      }`;
      io.err(`repoxy verify: MISMATCH ${name}: ${m.reason}; moved to ${m.quarantined}`);
    }
    for (const u of report.unrecorded) {
      io.err(`repoxy verify: note: ${u.path} has no record (it is not served)`);
    }
    io.out(
      `verify: ${report.checked} archive(s) (${formatSize(report.bytes)}) checked: ` +
        `${report.checked - report.mismatches.length} ok, ${report.mismatches.length} quarantined` +
        (report.unrecorded.length ? `, ${report.unrecorded.length} without a record` : ""),
    );
    const mods = report.modules;
    for (const m of mods.mismatches) io.err(`repoxy verify: MISMATCH module ${m}`);
    if (mods.checked > 0) {
      io.out(
        `verify: ${mods.checked} module archive(s) (${formatSize(mods.bytes)}) checked: ` +
          `${mods.checked - mods.mismatches.length} ok, ${mods.mismatches.length} quarantined`,
      );
    }
    // On a bucket: the fleet's copies too (the local tier was checked above).
    const bucketBad = config.storage ? await verifyFleetBucket(config, io) : 0;
    return report.mismatches.length + mods.mismatches.length + bucketBad > 0
      ? EXIT_FAILED
      : EXIT_OK;
  },
});

/** Verifies the archives of `storage`'s bucket; returns how many were quarantined. */
async function verifyFleetBucket(
  config: Config,
  io: CliIo,
): Promise<number> {
  const log = createLogger("text", (l) => io.err(l), "warn");
  await using cmd = await openCommandCache(config.cacheDir, config.storage, log, { create: true });
  const { verifyBucket } = await import("../storage_s3/bucket_maintenance.ts");
  const progress = new Progress(io);
  const r = await verifyBucket(cmd.tier!.bucket, {
    readMeta: (f) => cmd.cache.packages.readMeta(f.provider, f.version, f.platform),
    onProgress: (done, total, bytes) =>
      progress.update(done, total, `bucket archives  ${formatSize(bytes)}`),
  });
  progress.done();
  for (const m of r.mismatches) {
    const name = `${providerString(m.file.provider)} ${m.file.version} ${
      platformString(m.file.platform)
    }`;
    io.err(`repoxy verify: MISMATCH in the bucket ${name}: ${m.reason}; moved to ${m.quarantined}`);
  }
  for (const u of r.unrecorded) {
    io.err(`repoxy verify: note: ${cmd.tier!.bucket.locate(u.key)} has no record (not judged)`);
  }
  io.out(
    `verify: ${r.checked} archive(s) (${formatSize(r.bytes)}) checked in ${
      cmd.tier!.bucket.where()
    }: ${r.checked - r.mismatches.length} ok, ${r.mismatches.length} quarantined` +
      (r.unrecorded.length ? `, ${r.unrecorded.length} without a record` : ""),
  );
  return r.mismatches.length;
}
