/**
 * `repoxy warm`: fills the cache with what lock files and provider addresses
 * name, for chosen platforms, before anyone asks for it.
 *
 * Everything goes through the app's own request handler (`{version}.json`,
 * then each archive route, bodies read to the end), so warming caches exactly
 * the metadata an offline mirror needs later and every byte passes the same
 * checksum and signature checks as when a client triggers the download.
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
import { createHash } from "../deps/crypto.ts";
import type { OpenObject } from "../cache/storage.ts";
import { join } from "../deps/path.ts";
import { LockFileError, readLockFile } from "../protocol/lockfile.ts";
import {
  compareVersions,
  type PlatformRef,
  platformString,
  type ProviderRef,
  providerString,
} from "../protocol/names.ts";
import { ArgumentError, parseProviderAddress } from "../protocol/provider_address.ts";
import { formatSize } from "../base/size.ts";
import { isModuleArg, moduleTargets, type ModuleWarmTarget, warmModules } from "./module_ops.ts";

/** Something to warm: a provider, maybe a version, maybe hashes a lock file pins. */
export interface WarmTarget {
  provider: ProviderRef;
  /** Undefined: the newest release the upstream lists. */
  version?: string;
  /** Hashes from a lock file; a fetched archive must match one of them. */
  lockHashes?: string[];
  /** Where the target came from (argument or `file:line`), for messages. */
  source: string;
}

/** Outcome for one archive. */
export interface WarmItem {
  provider: ProviderRef;
  version: string;
  platform: PlatformRef;
  status: "fetched" | "cached" | "failed";
  bytes: number;
  error?: string;
  warning?: string;
}

/** Outcome of a warm run. */
export interface WarmReport {
  items: WarmItem[];
  /** Targets that failed before any archive was chosen (unknown provider, ...). */
  failures: string[];
}

/** Options of {@link warm}. */
export interface WarmOptions {
  targets: WarmTarget[];
  platforms: PlatformRef[];
  concurrency: number;
  progress?: Progress;
}

const BASE = "http://repoxy.warm";

async function errorText(res: Response): Promise<string> {
  const text = await res.text();
  try {
    const msg = (JSON.parse(text) as { errors?: unknown[] }).errors?.[0];
    if (typeof msg === "string") return `${res.status}: ${msg}`;
  } catch { /* not JSON */ }
  return `${res.status}: ${text.slice(0, 200)}`;
}

async function getJson(app: App, path: string): Promise<unknown> {
  const res = await app.handle(new Request(BASE + path));
  if (res.status !== 200) throw new Error(await errorText(res));
  return await res.json();
}

/** The newest version without a pre-release suffix, as Terraform picks with no constraint. */
export function newestRelease(versions: string[]): string | undefined {
  return versions.filter((v) => !/^[^-+]*-/.test(v)).sort((a, b) => compareVersions(b, a))[0];
}

/**
 * Warms the cache of `app`. Never throws for a provider or archive that fails:
 * each failure is in the report, the rest goes on.
 */
export async function warm(app: App, opts: WarmOptions): Promise<WarmReport> {
  const report: WarmReport = { items: [], failures: [] };
  const progress = opts.progress;

  // Merge duplicates (the same provider from several lock files or arguments).
  const resolved = new Map<string, WarmTarget & { version: string }>();
  await mapPool(opts.targets, opts.concurrency, async (t) => {
    let version = t.version;
    if (version === undefined) {
      try {
        const idx = await getJson(app, `/${providerString(t.provider)}/index.json`) as {
          versions?: Record<string, unknown>;
        };
        version = newestRelease(Object.keys(idx.versions ?? {}));
        if (!version) throw new Error("the upstream lists no released version");
      } catch (e) {
        report.failures.push(
          `${providerString(t.provider)} (${t.source}): ${(e as Error).message}`,
        );
        return;
      }
    }
    const key = `${providerString(t.provider)}@${version}`;
    const prev = resolved.get(key);
    const merged: WarmTarget & { version: string } = { ...t, version };
    if (prev?.lockHashes || t.lockHashes) {
      merged.lockHashes = [...new Set([...(prev?.lockHashes ?? []), ...(t.lockHashes ?? [])])];
    }
    resolved.set(key, merged);
  });

  interface Job {
    target: WarmTarget & { version: string };
    platform: PlatformRef;
    url: string;
    zh: string | undefined;
  }
  const jobs: Job[] = [];
  await mapPool([...resolved.values()], opts.concurrency, async (t) => {
    const p = providerString(t.provider);
    let archives: Record<string, { url?: unknown; hashes?: unknown }>;
    try {
      const doc = await getJson(app, `/${p}/${t.version}.json`) as { archives?: typeof archives };
      archives = doc.archives ?? {};
    } catch (e) {
      report.failures.push(`${p} ${t.version} (${t.source}): ${(e as Error).message}`);
      return;
    }
    for (const pl of opts.platforms) {
      const a = archives[platformString(pl)];
      if (!a || typeof a.url !== "string") {
        report.items.push({
          provider: t.provider,
          version: t.version,
          platform: pl,
          status: "failed",
          bytes: 0,
          error: `not published for ${platformString(pl)} (the upstream offers ${
            Object.keys(archives).sort().join(", ") || "no platforms"
          })`,
        });
        continue;
      }
      const hashes = Array.isArray(a.hashes) ? a.hashes.filter((h) => typeof h === "string") : [];
      const zh = hashes.find((h) => h.startsWith("zh:"))?.slice(3);
      jobs.push({ target: t, platform: pl, url: a.url, zh });
    }
  });

  let done = 0;
  let bytes = 0;
  const tick = (force = false) =>
    progress?.update(done, jobs.length, `archives  ${formatSize(bytes)}`, force);
  tick(true);
  const items = await mapPool(jobs, opts.concurrency, async (job) => {
    const item = await warmArchive(app, job.target, job.platform, job.url, job.zh, (n) => {
      bytes += n;
      tick();
    });
    done++;
    tick();
    return item;
  });
  tick(true);
  report.items.push(...items);
  return report;
}

async function drain(object: OpenObject): Promise<void> {
  // From the start: the open's fingerprint check left the position at the end.
  await object.seek(0, Deno.SeekMode.Start);
  const buf = new Uint8Array(1 << 20);
  while (await object.read(buf) !== null) { /* the tier writes what passes */ }
}

async function warmArchive(
  app: App,
  t: WarmTarget & { version: string },
  pl: PlatformRef,
  url: string,
  zh: string | undefined,
  onBytes: (n: number) => void,
): Promise<WarmItem> {
  const item: WarmItem = {
    provider: t.provider,
    version: t.version,
    platform: pl,
    status: "cached",
    bytes: 0,
  };
  const fail = (error: string): WarmItem => ({ ...item, status: "failed", error });
  const p = t.provider;
  try {
    const cached = await app.packages.open(p, t.version, pl);
    let sha256: string;
    if (cached) {
      // On a bucket, an archive the fleet holds but this host does not is
      // read through once: the tier keeps it locally as it streams.
      const key = app.packages.keyOf(p, t.version, pl);
      if (app.config.storage && !(await app.cache.storage.stat(key))) {
        await drain(cached.object).catch(() => {}); // a failed fill is only a later miss
      }
      cached.object.close();
      sha256 = cached.meta.sha256;
      item.bytes = cached.object.size;
    } else {
      // The mirror protocol's url is relative to {version}.json; Repoxy names
      // its own archive route there, which is what we request.
      const path = new URL(url, `${BASE}/${providerString(p)}/${t.version}.json`).pathname;
      const res = await app.handle(new Request(BASE + path));
      if (res.status !== 200) return fail(await errorText(res));
      const hash = createHash("sha256");
      try {
        for await (const chunk of res.body ?? new ReadableStream<Uint8Array>()) {
          hash.update(chunk);
          item.bytes += chunk.length;
          onBytes(chunk.length);
        }
      } catch (e) {
        return fail(`download failed: ${(e as Error).message}`);
      }
      sha256 = hash.digest("hex");
      if (zh && sha256 !== zh.toLowerCase()) {
        return fail(`received bytes with sha256 ${sha256}, but the mirror lists zh:${zh}`);
      }
      await app.downloads.inflight(p, t.version, pl)?.done.catch(() => {});
      // "fetched" only for what is really stored: the record as it is on disk
      // now, and the committed file itself (size and fingerprint checked).
      const meta = await app.packages.readMeta(p, t.version, pl);
      const stored = meta?.sha256 === sha256
        ? await app.packages.open(p, t.version, pl)
        : undefined;
      stored?.object.close();
      if (!stored || stored.meta.sha256 !== sha256 || stored.object.size !== item.bytes) {
        return fail("served, but not stored in the cache");
      }
      item.status = res.headers.get("x-repoxy-cache") === "hit" ? "cached" : "fetched";
    }
    if (t.lockHashes && t.lockHashes.length > 0) {
      const h1 = await app.packages.ensureH1(p, t.version, pl);
      const ok = t.lockHashes.includes(`zh:${sha256}`) ||
        (h1 !== undefined && t.lockHashes.includes(h1));
      if (!ok) {
        if (t.lockHashes.some((h) => h.startsWith("zh:"))) {
          // Registry-made locks pin every platform's zh:, so this is a real mismatch.
          return fail(`does not match any hash that ${t.source} pins (sha256 ${sha256})`);
        }
        item.warning = `${t.source} has no hash for ${platformString(pl)}; terraform init on ` +
          `that platform will refuse it until "terraform providers lock -platform=${
            platformString(pl)
          }" adds one`;
      }
    }
    return item;
  } catch (e) {
    return fail((e as Error).message);
  }
}

const HELP = `Usage: repoxy warm [options]
         [LOCKFILE | DIR | PROVIDER[@VERSION] | MODULE@VERSION | modules.json]...

Pre-fetches provider archives and module versions into the cache, verified
exactly as when a client asks for them, so later "terraform init"s (and an
offline mirror) find them.

Arguments:
  LOCKFILE             a .terraform.lock.hcl: every provider at its locked version;
                       fetched archives must also match a hash the lock file pins
  DIR                  a directory holding a .terraform.lock.hcl
  PROVIDER[@VERSION]   [HOSTNAME/]NAMESPACE/TYPE, e.g. hashicorp/aws@5.31.0 or
                       registry.opentofu.org/hashicorp/random; without @VERSION the
                       newest release; without HOSTNAME the default upstream
  MODULE@VERSION       a registry module, HOSTNAME/NAMESPACE/NAME/SYSTEM@VERSION
  modules.json         .terraform/modules/modules.json: every registry module it lists
  (none)               ./.terraform.lock.hcl

Options:
  -p, --platform OS_ARCH  platform to fetch, repeatable or comma-separated
                          (default: this machine's)
  -j, --concurrency N     archives fetched at once (default 4)
${COMMON_HELP}

Archives already in the cache are skipped. With "storage.kind": "s3", fetched
archives go to the shared bucket (and this host's local tier); archives the
bucket already holds are copied into the local tier, not fetched again. Shows a progress bar when stderr is a
terminal, and prints one summary line. Exit codes: 0 all present, 1 something
failed (each failure is named), 2 bad arguments or config.`;

async function collectTargets(
  args: string[],
  defaultHost: string,
): Promise<WarmTarget[]> {
  const targets: WarmTarget[] = [];
  const inputs = args.length > 0 ? args : [".terraform.lock.hcl"];
  for (const arg of inputs) {
    let st: Deno.FileInfo | undefined;
    try {
      st = await Deno.stat(arg);
    } catch { /* not a path: a provider address */ }
    if (st) {
      const file = st.isDirectory ? join(arg, ".terraform.lock.hcl") : arg;
      for (const lp of await readLockFile(file, defaultHost)) {
        targets.push({
          provider: lp.provider,
          version: lp.version!,
          lockHashes: lp.hashes,
          source: `${file}:${lp.line}`,
        });
      }
      continue;
    }
    if (args.length === 0) {
      throw new ArgumentError(
        "no lock file or provider given, and ./.terraform.lock.hcl does not exist",
      );
    }
    const t = parseProviderAddress(arg, defaultHost);
    targets.push({ ...t, source: arg });
  }
  return targets;
}

/** `repoxy warm`. */
export const warmCommand: Command = defineCommand({
  name: "warm",
  summary: "pre-fetch providers named by lock files or addresses",
  help: HELP,
  options: {
    platform: { type: "string", short: "p", multiple: true },
    concurrency: { type: "string", short: "j" },
  },
  async run({ args: parsed, config, io }) {
    if (config.offline) {
      io.err("repoxy warm: the config sets offline, but warming fetches from the upstreams");
      return EXIT_USAGE;
    }
    const concurrency = Number(flagString(parsed, "concurrency") ?? "4");
    if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 64) {
      io.err("repoxy warm: --concurrency must be a whole number from 1 to 64");
      return EXIT_USAGE;
    }
    let targets: WarmTarget[];
    let platforms: PlatformRef[];
    let modules: ModuleWarmTarget[];
    const providerArgs = parsed.positionals.filter((a) => !isModuleArg(a));
    const moduleArgs = parsed.positionals.filter(isModuleArg);
    try {
      platforms = platformsFlag(parsed);
      modules = await moduleTargets(moduleArgs).catch((e) => {
        throw new ArgumentError((e as Error).message);
      });
      targets = providerArgs.length === 0 && moduleArgs.length > 0
        ? []
        : await collectTargets(providerArgs, config.defaultUpstream);
    } catch (e) {
      if (e instanceof ArgumentError || e instanceof LockFileError) {
        io.err(`repoxy warm: ${e.message}`);
        return EXIT_USAGE;
      }
      throw e;
    }
    for (const t of targets) {
      if (!config.upstreams.has(t.provider.hostname)) {
        io.err(
          `repoxy warm: ${
            providerString(t.provider)
          } (${t.source}): registry ${t.provider.hostname} is not in "upstreams" of the config`,
        );
        return EXIT_USAGE;
      }
    }

    const progress = new Progress(io);
    await using app = await createCommandApp(config, commandLogger(config, progress));
    const started = Date.now();
    const report = await warm(app, { targets, platforms, concurrency, progress });
    const mods = await warmModules(app, modules);
    progress.done();
    for (const m of mods) {
      if (m.status === "failed") io.err(`repoxy warm: FAILED module ${m.name}: ${m.error}`);
      if (m.status === "passed-through") io.err(`repoxy warm: note: module ${m.name}: ${m.error}`);
    }
    if (mods.length > 0) {
      const c = (s: string) => mods.filter((m) => m.status === s).length;
      io.out(
        `warm: ${mods.length} module version(s): ${c("fetched")} fetched, ${
          c("cached")
        } already cached, ` +
          `${c("passed-through")} not cacheable, ${c("failed")} failed`,
      );
    }

    for (const f of report.failures) io.err(`repoxy warm: FAILED ${f}`);
    for (const i of report.items) {
      const name = `${providerString(i.provider)} ${i.version} ${platformString(i.platform)}`;
      if (i.status === "failed") io.err(`repoxy warm: FAILED ${name}: ${i.error}`);
      if (i.warning) io.err(`repoxy warm: warning: ${name}: ${i.warning}`);
    }
    const count = (s: WarmItem["status"]) => report.items.filter((i) => i.status === s).length;
    const fetchedBytes = report.items.filter((i) => i.status === "fetched").reduce(
      (n, i) => n + i.bytes,
      0,
    );
    const failed = count("failed") + report.failures.length +
      mods.filter((m) => m.status === "failed").length;
    io.out(
      `warm: ${report.items.length} archive(s) for ${platforms.map(platformString).join(", ")}: ` +
        `${count("fetched")} fetched (${formatSize(fetchedBytes)}), ${
          count("cached")
        } already cached, ` +
        `${failed} failed in ${((Date.now() - started) / 1000).toFixed(1)} s`,
    );
    return failed > 0 ? EXIT_FAILED : EXIT_OK;
  },
});
