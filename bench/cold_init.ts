/**
 * Cold `terraform init` through Repoxy against talking to the registry
 * directly (issue 12 point 3).
 *
 * A fake registry on loopback (bench/upstream.ts, signed SHA256SUMS) adds
 * `latencyMs` (20 ms) before every answer. Per round and per provider count
 * (3 and 10 small providers), three variants run in a rotating order:
 *
 * - `direct`:   terraform with a `host` block pointing at the fake registry;
 * - `mirror`:   terraform through Repoxy as a `network_mirror` (HTTPS, test CA);
 * - `registry`: terraform through Repoxy as a `host` block (HTTPS, test CA).
 *
 * Every Repoxy variant gets a fresh process and an empty cache directory
 * (spawned before the clock starts), so each measured init is fully cold:
 * discovery, version lists, download documents, SHA256SUMS, signature
 * checks, archives. Only the `terraform init` wall time is measured.
 *
 *   deno run -P=bench bench/cold_init.ts [--smoke] [--rounds N] [--providers 3,10]
 *       [--latency MS] [--root DIR] [--before DIR] [--warm-process] [--json FILE] [--trace]
 *
 * `--root` runs another checkout's main.ts; `--before DIR` also measures the
 * checkout in DIR (the code before a change) in the same interleaved rounds;
 * `--warm-process` keeps one warmed-up Repoxy per checkout and gives each
 * init providers never asked for (a running mirror, cold for them);
 * `--trace` starts Repoxy with REPOXY_TRACE=1 and prints the per-request
 * breakdown it logs (upstream request, headers, body, signature, fsync).
 * `runColdInit` is what bench/run.ts calls for its "cold init" rows.
 * @module
 */
import { parseArgs } from "../lib/deps/cli.ts";
import { createHash } from "../lib/deps/crypto.ts";
import { dirname, fromFileUrl, join, resolve } from "../lib/deps/path.ts";
import { makeProviderZip } from "../tests/_zip.ts";
import { makeTestTls } from "../tests/_tls.ts";
import { spawnRepoxy } from "../tests/_process.ts";
import { median, run, which } from "./tools.ts";
import { startBenchUpstream, type UpstreamArchive, type UpstreamProvider } from "./upstream.ts";

const REPO = resolve(dirname(fromFileUrl(import.meta.url)), "..");
const HOST = "registry.terraform.io";
const NS = "cold";

/**
 * The variants one round measures; `mirror@before` and `registry@before`
 * run the checkout given as `before` (the code before a change), interleaved.
 */
export type ColdVariant =
  | "direct"
  | "mirror"
  | "registry"
  | "mirror@before"
  | "registry@before";

/** Options of {@link runColdInit}. */
export interface ColdInitOptions {
  /** Provider counts to measure (default 3 and 10). */
  providers: number[];
  rounds: number;
  /** Delay the fake registry adds before every answer. */
  latencyMs: number;
  /** Checkout whose main.ts runs (default this one). */
  root?: string;
  /** Another checkout measured in the same rounds (before/after a change). */
  before?: string;
  /**
   * One Repoxy process per checkout for the whole run (warmed up first),
   * each init asking for providers it never saw: a running mirror's cold
   * cache. Default: a fresh process per init.
   */
  warmProcess?: boolean;
  /** Start Repoxy with REPOXY_TRACE=1 and collect its trace lines. */
  trace?: boolean;
  log?: (s: string) => void;
}

/** Seconds of every measured init, by provider count and variant. */
export interface ColdInitResult {
  latencyMs: number;
  rounds: number;
  times: Record<string, Partial<Record<ColdVariant, number[]>>>;
  /** Upstream requests per init, by provider count and variant (from the last round). */
  upstreamRequests: Record<string, Partial<Record<ColdVariant, Record<string, number>>>>;
  /** Trace lines of Repoxy (with `trace`). */
  trace: string[];
  terraform: string;
}

function hostPlatform(): string {
  const arch = Deno.build.arch === "aarch64" ? "arm64" : "amd64";
  return `${Deno.build.os}_${arch}`;
}

/** Runs the measurement; undefined when terraform is missing. */
export async function runColdInit(opts: ColdInitOptions): Promise<ColdInitResult | undefined> {
  const log = opts.log ?? (() => {});
  const terraform = await which("terraform");
  if (!terraform) return undefined;
  const root = resolve(opts.root ?? REPO);
  const work = await Deno.makeTempDir({ prefix: "repoxy-cold-" });
  try {
    const tls = await makeTestTls(join(work, "tls"));
    const platform = hostPlatform();
    const maxN = Math.max(...opts.providers);
    // The upstream looks providers up in this array per request: more can be added while it runs.
    const providers: UpstreamProvider[] = [];
    const addProvider = async (type: string) => {
      const path = join(work, `${type}.zip`);
      const bytes = await makeProviderZip(type, "1.0.0", platform);
      await Deno.writeFile(path, bytes);
      const sha256 = createHash("sha256").update(bytes).digest("hex");
      // Three platforms, as real providers list several: the mirror's
      // {version}.json needs every platform's download document.
      const archives: UpstreamArchive[] = [platform, "darwin_arm64", "windows_amd64"]
        .filter((p, j, all) => all.indexOf(p) === j)
        .map((pl) => {
          const [os, arch] = pl.split("_") as [string, string];
          return { os, arch, path, sha256, size: bytes.length };
        });
      providers.push({ namespace: NS, type, versions: [{ version: "1.0.0", archives }] });
      return type;
    };
    /** `n` providers no init has asked for yet (a warm process, a cold cache for them). */
    let fresh = 0;
    const freshTypes = async (n: number) => {
      const out: string[] = [];
      for (let i = 0; i < n; i++) out.push(await addProvider(`f${fresh++}`));
      return out;
    };
    for (let i = 0; i < maxN; i++) await addProvider(`p${i}`);
    await using upstream = await startBenchUpstream({
      providers,
      bandwidth: 0,
      latencyMs: opts.latencyMs,
    });
    const version = (await run(terraform, ["version"])).stdout.split("\n")[0] ?? "terraform";
    const result: ColdInitResult = {
      latencyMs: opts.latencyMs,
      rounds: opts.rounds,
      times: {},
      upstreamRequests: {},
      trace: [],
      terraform: version,
    };
    const variants: ColdVariant[] = ["direct", "mirror", "registry"];
    if (opts.before) variants.push("mirror@before", "registry@before");
    let seq = 0;
    // --warm-process: one Repoxy per checkout for the whole run, warmed up
    // (JIT, TLS, discovery, first signature check) by an untimed init of
    // other providers; each measured init then asks for providers it has
    // never seen, so its cache is cold for them.
    const kept = new Map<string, Awaited<ReturnType<typeof startRepoxy>>>();
    const cliFor = (variant: ColdVariant, url: string) =>
      variant.startsWith("mirror")
        ? `provider_installation {\n  network_mirror {\n    url = "${url}"\n  }\n}\n`
        : `host "${HOST}" {\n  services = {\n` +
          `    "providers.v1" = "${url}v1/providers/${HOST}/"\n  }\n}\n`;
    if (opts.warmProcess) {
      for (const from of [root, ...(opts.before ? [resolve(opts.before)] : [])]) {
        const dir = join(work, `kept${kept.size}`);
        await Deno.mkdir(join(dir, "home"), { recursive: true });
        const repoxy = await startRepoxy(from, dir, upstream.url, tls, false);
        kept.set(from, repoxy);
        for (const v of ["mirror", "registry"] as const) {
          const wdir = join(work, `warm${seq++}`);
          await Deno.mkdir(join(wdir, "home"), { recursive: true });
          await init(terraform, wdir, cliFor(v, repoxy.url), await freshTypes(3), tls.caCertPath);
        }
      }
    }
    try {
      for (let round = 0; round < opts.rounds; round++) {
        for (const n of opts.providers) {
          const types = providers.slice(0, n).map((p) => p.type);
          const times = result.times[n] ??= {};
          const counts = result.upstreamRequests[n] ??= {};
          // Rotate the order so no variant always runs first (or last).
          const order = variants.map((_, j) => variants[(j + round + n) % variants.length]!);
          for (const variant of order) {
            const dir = join(work, `run${seq++}`);
            await Deno.mkdir(join(dir, "home"), { recursive: true });
            const before = { ...upstream.stats };
            let secs: number;
            if (variant === "direct") {
              const cli = `host "${HOST}" {\n  services = {\n` +
                `    "providers.v1" = "${upstream.url}/v1/providers/"\n  }\n}\n`;
              secs = await init(terraform, dir, cli, types);
            } else {
              const from = variant.endsWith("@before") ? resolve(opts.before!) : root;
              const warm = kept.get(from);
              if (warm) {
                const cli = cliFor(variant, warm.url);
                try {
                  secs = await init(terraform, dir, cli, await freshTypes(n), tls.caCertPath);
                } catch (e) {
                  throw new Error(
                    `${(e as Error).message}\nRepoxy:\n${warm.stderr.slice(-40).join("\n")}`,
                  );
                }
              } else {
                await using repoxy = await startRepoxy(from, dir, upstream.url, tls, !!opts.trace);
                secs = await init(
                  terraform,
                  dir,
                  cliFor(variant, repoxy.url),
                  types,
                  tls.caCertPath,
                );
                if (opts.trace) {
                  await repoxy.stop();
                  result.trace.push(
                    `# ${variant}, ${n} providers, round ${round + 1}: ${
                      (secs * 1000).toFixed(0)
                    } ms`,
                    ...repoxy.stderr.filter((l) => / INFO (trace|request|archive cached) /.test(l)),
                  );
                }
              }
            }
            (times[variant] ??= []).push(secs);
            const delta: Record<string, number> = {};
            for (const [k, v] of Object.entries(upstream.stats)) {
              if (v - (before[k] ?? 0) > 0) delta[k] = v - (before[k] ?? 0);
            }
            counts[variant] = delta;
            log(`round ${round + 1}, ${n} providers, ${variant}: ${(secs * 1000).toFixed(0)} ms`);
          }
        }
      }
    } finally {
      for (const r of kept.values()) await r[Symbol.asyncDispose]();
    }
    return result;
  } finally {
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}

/** A fresh Repoxy process over an empty cache in `dir`. */
function startRepoxy(
  root: string,
  dir: string,
  upstreamUrl: string,
  tls: { certPath: string; keyPath: string },
  trace: boolean,
) {
  const config = join(dir, "repoxy.json");
  Deno.writeTextFileSync(
    config,
    JSON.stringify({
      cacheDir: join(dir, "cache"),
      tls: { cert: tls.certPath, key: tls.keyPath },
      upstreams: { [HOST]: { url: upstreamUrl } },
    }),
  );
  return spawnRepoxy(Deno.execPath(), [
    "run",
    "-P=serve",
    join(root, "main.ts"),
    "serve",
    "--config",
    config,
    "--listen",
    "127.0.0.1:0",
  ], {
    cwd: root,
    env: { HOME: dir, ...(trace ? { REPOXY_TRACE: "1" } : {}) },
  });
}

/** One `terraform init` in `dir` with `cli` as its CLI config; returns seconds. */
async function init(
  terraform: string,
  dir: string,
  cli: string,
  types: string[],
  caCertPath?: string,
): Promise<number> {
  const cliPath = join(dir, "cli.tfrc");
  await Deno.writeTextFile(cliPath, cli);
  const reqs = types.map((t) => `    ${t} = { source = "${NS}/${t}", version = "1.0.0" }`);
  await Deno.writeTextFile(
    join(dir, "main.tf"),
    `terraform {\n  required_providers {\n${reqs.join("\n")}\n  }\n}\n`,
  );
  const env: Record<string, string> = {
    PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
    HOME: join(dir, "home"),
    TF_CLI_CONFIG_FILE: cliPath,
    CHECKPOINT_DISABLE: "1",
    TF_IN_AUTOMATION: "1",
  };
  if (caCertPath) env.SSL_CERT_FILE = caCertPath;
  const t0 = performance.now();
  const r = await run(terraform, ["init", "-input=false", "-no-color"], {
    cwd: dir,
    env,
    clearEnv: true,
    timeoutMs: 120_000,
  });
  const secs = (performance.now() - t0) / 1000;
  if (r.code !== 0) throw new Error(`terraform init failed in ${dir}:\n${r.stdout}\n${r.stderr}`);
  return secs;
}

/** Settings per bench profile (bench/run.ts passes its own). */
export const COLD_PROFILES: Record<
  "full" | "quick" | "smoke",
  Pick<ColdInitOptions, "providers" | "rounds" | "latencyMs">
> = {
  full: { providers: [3, 10], rounds: 5, latencyMs: 20 },
  quick: { providers: [3, 10], rounds: 2, latencyMs: 20 },
  smoke: { providers: [2], rounds: 1, latencyMs: 5 },
};

/** One row of bench/run.ts's table. */
export interface ColdRow {
  measure: string;
  repoxy: string;
  baseline: string;
  ratio: string;
  /** Per-round ratios, min–max. */
  range: string;
  target: string;
  met: "yes" | "NO";
}

/**
 * Rows for bench/run.ts: median with min–max, and the ratio of the medians
 * vs direct (target ≤ 1.0).
 */
export function coldInitTableRows(r: ColdInitResult): ColdRow[] {
  const ms = (xs: number[]) =>
    `${(median(xs) * 1000).toFixed(0)} ms (${(Math.min(...xs) * 1000).toFixed(0)}–${
      (Math.max(...xs) * 1000).toFixed(0)
    })`;
  const rows: ColdRow[] = [];
  for (const [n, byVariant] of Object.entries(r.times)) {
    const direct = byVariant.direct!;
    for (const v of ["mirror", "registry"] as const) {
      const xs = byVariant[v]!;
      const ratio = median(xs) / median(direct);
      rows.push({
        measure: `Cold terraform init, ${n} providers, ${
          v === "mirror" ? "network mirror" : "host block"
        } (vs direct, +${r.latencyMs} ms/request)`,
        repoxy: ms(xs),
        baseline: ms(direct),
        ratio: ratio.toFixed(2),
        range: xs.length === direct.length && xs.length > 1
          ? (() => {
            const per = xs.map((x, i) => x / direct[i]!);
            return `${Math.min(...per).toFixed(2)}–${Math.max(...per).toFixed(2)}`;
          })()
          : "-",
        target: "≤ 1.0",
        met: ratio <= 1 ? "yes" : "NO",
      });
    }
  }
  return rows;
}

/** Table rows (markdown) of a result: median, spread (min–max), ratio vs direct. */
export function coldInitRows(r: ColdInitResult): string[] {
  const ms = (s: number) => `${(s * 1000).toFixed(0)} ms`;
  const rows: string[] = [];
  for (const [n, byVariant] of Object.entries(r.times)) {
    const direct = byVariant.direct!;
    const d = median(direct);
    const measured = ["mirror", "registry", "mirror@before", "registry@before"] as const;
    for (const v of measured.filter((x) => byVariant[x])) {
      const xs = byVariant[v]!;
      const m = median(xs);
      const ratios = xs.map((x, i) => x / (direct[i] ?? d));
      rows.push(
        `| Cold terraform init, ${n} providers, ${v} (vs direct) | ${ms(m)} ` +
          `(${ms(Math.min(...xs))}–${ms(Math.max(...xs))}) | ${ms(d)} ` +
          `(${ms(Math.min(...direct))}–${ms(Math.max(...direct))}) | ` +
          `${(m / d).toFixed(2)} (${Math.min(...ratios).toFixed(2)}–${
            Math.max(...ratios).toFixed(2)
          }) | ≤ 1.0 | ${m / d <= 1 ? "yes" : "NO"} |`,
      );
    }
  }
  return rows;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      smoke: { type: "boolean" },
      rounds: { type: "string" },
      providers: { type: "string" },
      latency: { type: "string" },
      root: { type: "string" },
      before: { type: "string" },
      json: { type: "string" },
      trace: { type: "boolean" },
      "warm-process": { type: "boolean" },
    },
  });
  const base = COLD_PROFILES[values.smoke ? "smoke" : "full"];
  const r = await runColdInit({
    providers: values.providers ? values.providers.split(",").map(Number) : base.providers,
    rounds: values.rounds ? Number(values.rounds) : base.rounds,
    latencyMs: values.latency ? Number(values.latency) : base.latencyMs,
    ...(values.root ? { root: values.root } : {}),
    ...(values.before ? { before: values.before } : {}),
    trace: !!values.trace,
    warmProcess: !!values["warm-process"],
    // deno-lint-ignore no-console
    log: (s) => console.error(`cold_init: ${s}`),
  });
  // deno-lint-ignore no-console
  const out = (s: string) => console.log(s);
  if (!r) {
    out("SKIP cold init: terraform is not on PATH");
    Deno.exit(0);
  }
  out(
    `Cold terraform init, fake registry +${r.latencyMs} ms per request, medians of ${r.rounds} ` +
      `(min–max); ratio per round vs the direct init of that round`,
  );
  out("");
  out("| Measure | Repoxy | direct | Ratio | Target | Met |");
  out("|---|---:|---:|---:|---|---|");
  for (const row of coldInitRows(r)) out(row);
  out("");
  out(`Upstream requests per init: ${JSON.stringify(r.upstreamRequests)}`);
  if (values.trace) { for (const l of r.trace) out(l); }
  if (values.json) await Deno.writeTextFile(values.json, JSON.stringify(r, null, 2));
}
