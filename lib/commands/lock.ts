/**
 * `repoxy lock`: writes a complete `.terraform.lock.hcl` for chosen platforms
 * without the client downloading any archive.
 *
 * Through a network mirror Terraform locks only the current platform's `h1:`;
 * `terraform providers lock -platform=...` completes the file by downloading
 * every platform's archive. Repoxy holds (or fetches, next to the upstream)
 * those archives, so this command writes the lock `terraform providers lock`
 * would write against the registry directly, byte for byte: per provider the
 * `h1:` of each requested platform, computed by Repoxy from the cached archive,
 * plus every `zh:` of the publisher's signed SHA256SUMS.
 *
 * Everything comes through the app's source seam (`app.source`): version
 * lists, SHA256SUMS (signature verified) and archives (`fetchArchive`, into
 * the cache, checked against those sums), so each byte passes the same checks
 * as when a client asks for it. Client tokens (`auth`) do not apply: this
 * command is the operator, not a client.
 * @module
 */
import type { App } from "../app.ts";
import {
  type Command,
  commandLogger,
  COMMON_HELP,
  createCommandApp,
  defineCommand,
  EXIT_FAILED,
  EXIT_OK,
  EXIT_USAGE,
  flagString,
  mapPool,
  platformsFlag,
  Progress,
} from "./cli.ts";
import { dirname, join } from "../deps/path.ts";
import { Slots } from "../upstream/slots.ts";
import { formatSize } from "../base/size.ts";
import { formatLockFile, type LockEntry, LockFileError } from "../protocol/lockfile.ts";
import {
  archiveFilename,
  parseArchiveFilename,
  type PlatformRef,
  platformString,
  type ProviderRef,
  providerString,
} from "../protocol/names.ts";
import { ArgumentError } from "../protocol/provider_address.ts";
import { parseSha256Sums } from "../protocol/sha256sums.ts";
import { TfConfigError } from "../protocol/tf_config.ts";
import {
  allows,
  ConstraintError,
  constraintsString,
  newestAllowed,
} from "../protocol/version_constraints.ts";
import { type DirRequirements, type LockRequest, readDirRequirements } from "./lock_inputs.ts";

/** Options of {@link lockProviders}. */
export interface LockOptions {
  requests: LockRequest[];
  platforms: PlatformRef[];
  /** Archives fetched at once. */
  concurrency: number;
  progress?: Progress;
}

/** Outcome of {@link lockProviders}. */
export interface LockReport {
  entries: LockEntry[];
  /** One line per problem; no lock file should be written when there are any. */
  failures: string[];
  /** Archives that had to be fetched into the cache, and bytes fetched. */
  fetched: number;
  fetchedBytes: number;
  /** Archives already in the cache. */
  cached: number;
  /** Providers written back unchanged (locked, but the configuration does not require them). */
  kept: string[];
}

/**
 * Computes the lock entries of `requests`. Never throws for one provider's
 * failure: each is named in `failures`.
 */
export async function lockProviders(app: App, opts: LockOptions): Promise<LockReport> {
  const report: LockReport = {
    entries: [],
    failures: [],
    fetched: 0,
    fetchedBytes: 0,
    cached: 0,
    kept: [],
  };
  const progress = opts.progress;
  const total = opts.requests.length * opts.platforms.length;
  let done = 0;
  const tick = () => progress?.update(done, total, "archives");

  // Providers are worked on side by side (their metadata is small); archive
  // fetches share one bound, `concurrency`, whichever provider they are for.
  const archiveSlots = new Slots(opts.concurrency);
  await mapPool(opts.requests, 4, async (r) => {
    if (r.keep && r.lockedVersion !== undefined) {
      const kept: LockEntry = {
        provider: r.provider,
        version: r.lockedVersion,
        hashes: r.oldHashes,
      };
      if (r.keep.constraints) kept.constraints = r.keep.constraints;
      report.entries.push(kept);
      report.kept.push(`${providerString(r.provider)} (${r.source})`);
      return;
    }
    const name = `${providerString(r.provider)} (${r.source})`;
    const fail = (msg: string) => {
      report.failures.push(`${name}: ${msg}`);
    };
    // 1. The version: the locked one (if the constraints still allow it), else
    //    the newest the upstream lists that they allow.
    let version = r.lockedVersion;
    if (version !== undefined && !allows(r.constraints, version)) {
      return fail(
        `the lock file selects ${version}, which does not match the constraint "${
          constraintsString(r.constraints)
        }"; run "terraform init -upgrade" first or remove the provider from the lock file`,
      );
    }
    if (version === undefined) {
      let versions: string[];
      try {
        versions = (await app.source.versionList(r.provider)).value.versions;
      } catch (e) {
        return fail(`cannot list its versions: ${(e as Error).message}`);
      }
      version = newestAllowed(r.constraints, versions);
      if (version === undefined) {
        const wanted = constraintsString(r.constraints);
        return fail(
          wanted
            ? `no available release matches "${wanted}" (the upstream lists ${
              versions.length > 0 ? versions.slice(-10).join(", ") : "no versions"
            })`
            : "the upstream lists no released version",
        );
      }
    }
    // 2. The publisher's signed SHA256SUMS: every line is a zh: hash, as
    //    Terraform's signatureAuthentication.AcceptableHashes takes them.
    let sums: Map<string, string>;
    try {
      const got = await app.source.checksums(r.provider, version);
      sums = parseSha256Sums(new TextDecoder().decode(got.value.sums));
    } catch (e) {
      return fail(`version ${version}: no verified SHA256SUMS: ${(e as Error).message}`);
    }
    const zh = [...new Set(sums.values())].map((d) => `zh:${d}`);
    // 3. Each platform's archive, in the cache, and its h1:.
    const h1s: string[] = [];
    let ok = true;
    await Promise.all(opts.platforms.map(async (pl) => {
      const file = archiveFilename(r.provider.type, version!, pl);
      const digest = sums.get(file);
      try {
        if (digest === undefined) {
          const offered = [...sums.keys()].sort().join(", ") || "nothing";
          throw new Error(
            `${platformString(pl)} is not in the publisher's signed SHA256SUMS of ${version} ` +
              `(it lists ${offered})`,
          );
        }
        await archiveSlots.take();
        try {
          h1s.push(await platformH1(app, r.provider, version!, pl, digest, report));
        } finally {
          archiveSlots.give();
        }
      } catch (e) {
        ok = false;
        fail(`${version} ${platformString(pl)}: ${(e as Error).message}`);
      } finally {
        done++;
        tick();
      }
    }));
    if (!ok) return;
    // 4. Old hashes stay (Terraform merges them), but they must be about the
    //    same release: a pinned zh: the signed sums do not list, or old
    //    hashes none of which matches, mean other bytes were locked.
    if (r.lockedVersion !== undefined && r.oldHashes.length > 0) {
      const known = new Set([...zh, ...h1s]);
      const strangeZh = r.oldHashes.filter((h) => h.startsWith("zh:") && !known.has(h));
      if (strangeZh.length > 0) {
        return fail(
          `the lock file pins ${strangeZh[0]}, which the publisher's signed SHA256SUMS of ` +
            `${version} does not list: the locked archives are not the published ones`,
        );
      }
      const checkable = r.oldHashes.filter((h) => h.startsWith("zh:") || h.startsWith("h1:"));
      if (checkable.length > 0 && !checkable.some((h) => known.has(h))) {
        // A lock made through a network mirror holds one h1: of the platform
        // it was made on, maybe not one asked for now: the archives of the
        // release the cache already holds may still vouch for it.
        for (const h of await cachedH1s(app, r.provider, version, sums)) known.add(h);
        if (!checkable.some((h) => known.has(h))) {
          return fail(
            `none of the hashes the lock file holds for ${version} matches the published ` +
              `archives of ${opts.platforms.map(platformString).join(", ")}; if the lock file ` +
              `was made on another platform, add that one with --platform so it can be checked`,
          );
        }
      }
    }
    const entry: LockEntry = {
      provider: r.provider,
      version,
      hashes: [...r.oldHashes, ...h1s, ...zh],
    };
    const c = constraintsString(r.constraints);
    if (c) entry.constraints = c;
    report.entries.push(entry);
  });
  return report;
}

/**
 * The `h1:` hashes of the archives of a release the cache holds with the
 * digest the signed SHA256SUMS gives them (any platform).
 */
async function cachedH1s(
  app: App,
  p: ProviderRef,
  version: string,
  sums: Map<string, string>,
): Promise<string[]> {
  const out: string[] = [];
  for (const [file, digest] of sums) {
    const a = parseArchiveFilename(p.type, file);
    if (!a || a.version !== version) continue;
    const pl = { os: a.os, arch: a.arch };
    const meta = await app.packages.readMeta(p, version, pl);
    if (meta?.sha256 !== digest) continue;
    const h1 = await app.packages.ensureH1(p, version, pl).catch(() => undefined);
    if (h1) out.push(h1);
  }
  return out;
}

/**
 * The `h1:` of one archive: from the cache, after fetching it through the
 * archive route (verified against the signed SHA256SUMS) when it is not there.
 */
async function platformH1(
  app: App,
  p: ProviderRef,
  version: string,
  pl: PlatformRef,
  zhDigest: string,
  report: LockReport,
): Promise<string> {
  let meta = await app.packages.readMeta(p, version, pl);
  let cached = meta ? await app.packages.open(p, version, pl) : undefined;
  cached?.object.close();
  if (cached) {
    report.cached++;
  } else {
    // The source seam, not the request handler: this command is no client
    // (client tokens do not apply), but the archive takes the same path as
    // for one, checked against the signed SHA256SUMS before it is stored.
    const got = await app.source.fetchArchive(p, version, pl);
    if (got.kind === "bypass") {
      await got.body.cancel().catch(() => {});
      throw new Error("the cache cannot be written now, so Repoxy cannot hash the archive");
    }
    const stored = await got.download.done;
    const bytes = stored.size;
    meta = await app.packages.readMeta(p, version, pl);
    cached = meta ? await app.packages.open(p, version, pl) : undefined;
    cached?.object.close();
    if (!cached) throw new Error("served, but not stored in the cache (is it writable?)");
    report.fetched++;
    report.fetchedBytes += bytes;
  }
  if (cached.meta.sha256 !== zhDigest) {
    throw new Error(
      `the cached archive has sha256 ${cached.meta.sha256}, but the signed SHA256SUMS ` +
        `lists ${zhDigest}`,
    );
  }
  const h1 = await app.packages.ensureH1(p, version, pl);
  if (!h1) throw new Error("the archive is not a valid zip, so it has no h1: hash");
  return h1;
}

/** Writes `text` to `path` atomically: a temp file beside it, fsync, rename. */
async function writeAtomically(path: string, text: string): Promise<void> {
  const tmp = join(dirname(path), `.terraform.lock.hcl.repoxy-${crypto.randomUUID()}.tmp`);
  try {
    const f = await Deno.open(tmp, { write: true, createNew: true, mode: 0o644 });
    try {
      const bytes = new TextEncoder().encode(text);
      let off = 0;
      while (off < bytes.length) off += await f.write(bytes.subarray(off));
      await f.sync();
    } finally {
      f.close();
    }
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}

const HELP = `Usage: repoxy lock [options] [DIR]

Writes DIR's .terraform.lock.hcl with, for every provider and every requested
platform, the h1: hash computed by Repoxy and every zh: hash of the publisher's
signed SHA256SUMS: the lock "terraform providers lock -platform=..." writes
against the registry, without any client downloading an archive. Archives not
in the cache are fetched into it (verified, as when a client asks).

Providers come from DIR's .terraform.lock.hcl (versions kept, hashes merged)
and the *.tf files of DIR and of the modules "terraform get" installed:
required_providers entries and providers used without one (versions chosen as
terraform chooses them: the newest the constraints allow, pre-releases only when
named exactly). *.tf.json files are not read. A locked provider the *.tf files
do not require is left as it is, as "terraform providers lock" leaves it; with
no *.tf file, every locked provider is completed.

Arguments:
  DIR                     the configuration directory, or its lock file (default: .)

Options:
  -p, --platform OS_ARCH  platform to lock, repeatable or comma-separated
                          (default: this machine's)
  -j, --concurrency N     archives fetched at once (default 4)
${COMMON_HELP}

Nothing is written when anything fails. Exit codes: 0 written (or already
complete), 1 something failed (each failure is named), 2 bad arguments, config,
lock file or configuration.`;

/** `repoxy lock`. */
export const lockCommand: Command = defineCommand({
  name: "lock",
  summary: "complete a lock file for many platforms without client downloads",
  help: HELP,
  options: {
    platform: { type: "string", short: "p", multiple: true },
    concurrency: { type: "string", short: "j" },
  },
  positionals: { max: 1 },
  async run({ args: parsed, config, io }) {
    const concurrency = Number(flagString(parsed, "concurrency") ?? "4");
    if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 64) {
      io.err("repoxy lock: --concurrency must be a whole number from 1 to 64");
      return EXIT_USAGE;
    }
    let dir = parsed.positionals[0] ?? ".";
    // The lock file itself names its directory too (as for "repoxy warm").
    if ((await Deno.stat(dir).catch(() => undefined))?.isFile) dir = dirname(dir);
    let platforms: PlatformRef[];
    let reqs: DirRequirements;
    try {
      platforms = platformsFlag(parsed);
      reqs = await readDirRequirements(dir);
    } catch (e) {
      if (
        e instanceof ArgumentError || e instanceof LockFileError || e instanceof TfConfigError ||
        e instanceof ConstraintError
      ) {
        io.err(`repoxy lock: ${e.message}`);
        return EXIT_USAGE;
      }
      throw e;
    }
    if (reqs.requests.length === 0) {
      io.err(`repoxy lock: "${dir}" requires no providers`);
      return EXIT_USAGE;
    }
    for (const r of reqs.requests) {
      if (!config.upstreams.has(r.provider.hostname)) {
        io.err(
          `repoxy lock: ${
            providerString(r.provider)
          } (${r.source}): registry ${r.provider.hostname} is not in "upstreams" of the config`,
        );
        return EXIT_USAGE;
      }
    }

    const progress = new Progress(io);
    await using app = await createCommandApp(config, commandLogger(config, progress));
    const started = Date.now();
    const report = await lockProviders(app, {
      requests: reqs.requests,
      platforms,
      concurrency,
      progress,
    });
    progress.done();
    for (const f of report.failures) io.err(`repoxy lock: FAILED ${f}`);
    for (const k of report.kept) {
      io.err(`repoxy lock: note: ${k} is not required by the configuration; left as it is`);
    }
    if (report.failures.length > 0) {
      io.err(`repoxy lock: ${join(dir, ".terraform.lock.hcl")} left unchanged`);
      return EXIT_FAILED;
    }
    const byName = report.entries.map((e) => [providerString(e.provider), e] as const).sort((
      [a],
      [b],
    ) => a < b ? -1 : 1);
    for (const [name, e] of byName) {
      const count = (scheme: string) =>
        [...new Set(e.hashes)].filter((h) => h.startsWith(scheme)).length;
      io.out(
        `${name} ${e.version}: ${count("h1:")} h1:, ${count("zh:")} zh:`,
      );
    }
    const text = formatLockFile(report.entries, reqs.header);
    const path = join(dir, ".terraform.lock.hcl");
    const changed = text !== reqs.oldText;
    if (changed) {
      try {
        await writeAtomically(path, text);
      } catch (e) {
        io.err(`repoxy lock: cannot write ${path}: ${(e as Error).message}`);
        return EXIT_FAILED;
      }
    }
    io.out(
      `lock: ${path} ${changed ? "written" : "already complete"}: ${report.entries.length} ` +
        `provider(s) for ${platforms.map(platformString).join(", ")}; ${report.fetched} ` +
        `archive(s) fetched into the cache (${
          formatSize(report.fetchedBytes)
        }), ${report.cached} ` +
        `already cached; the client downloads none; in ${
          ((Date.now() - started) / 1000).toFixed(1)
        } s`,
    );
    return EXIT_OK;
  },
});
