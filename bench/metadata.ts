/**
 * `deno run -P=bench bench/metadata.ts`: warm `index.json` and
 * `{version}.json` from Repoxy against nginx serving the same bytes, under
 * wrk, over plain HTTP and over TLS (wrk speaks HTTP/1.1 only). Repoxy and
 * nginx are measured interleaved (the order alternates every round) with the
 * same wrk threads and connections; each cell reports the median ratio, its
 * spread over rounds, and the median p99 of each side.
 *
 * Options: --rounds N (default 5), --seconds S per wrk run (default 3),
 * --connections C (default 32), --threads T (default 2), --versions N
 * (versions in index.json, default 300), --cpu-prof DIR (V8 CPU profile of
 * the plain-HTTP Repoxy, written when it stops), --only http|tls, --json FILE,
 * --nginx-workers N (default "auto", as Debian ships it), --repo DIR (run the Repoxy of another checkout, e.g. the commit before a
 * change), --keep. Each cell also gives the CPU time per request of each
 * server (from /proc): steadier than req/s on a loaded machine.
 * @module
 */
import { parseArgs } from "../lib/deps/cli.ts";
import { createHash } from "../lib/deps/crypto.ts";
import { dirname, fromFileUrl, join, resolve } from "../lib/deps/path.ts";
import { makeProviderZip } from "../tests/_zip.ts";
import { makeTestTls } from "../tests/_tls.ts";
import { startNginx } from "./nginx.ts";
import {
  type Child,
  ensurePrograms,
  freePort,
  median,
  run,
  spawnLogged,
  waitForHttp,
  wrkRate,
} from "./tools.ts";
import { startBenchUpstream, type UpstreamArchive } from "./upstream.ts";

const REPO = resolve(dirname(fromFileUrl(import.meta.url)), "..");
const HOST = "registry.terraform.io";
const NS = "bench";
const PLATFORMS = [
  "darwin_amd64",
  "darwin_arm64",
  "freebsd_amd64",
  "linux_386",
  "linux_amd64",
  "linux_arm",
  "linux_arm64",
  "windows_amd64",
];

// deno-lint-ignore no-console
const out = (s: string) => console.log(s);
// deno-lint-ignore no-console
const note = (s: string) => console.error(`bench: ${s}`);

/** p99 text from wrk ("1.23ms", "850.00us") in ms. */
function ms(t: string): number {
  const m = /^([\d.]+)(us|ms|s)$/.exec(t);
  if (!m) return NaN;
  return Number(m[1]) * ({ us: 0.001, ms: 1, s: 1000 } as Record<string, number>)[m[2]!]!;
}

/** CPU seconds (user + system) used so far by `pid` and its child processes (nginx workers). */
async function cpuSeconds(pid: number): Promise<number> {
  const pids = [pid];
  try {
    const kids = await Deno.readTextFile(`/proc/${pid}/task/${pid}/children`);
    pids.push(...kids.trim().split(/\s+/).filter(Boolean).map(Number));
  } catch { /* no children file: the process alone */ }
  let ticks = 0;
  for (const p of pids) {
    try {
      const stat = await Deno.readTextFile(`/proc/${p}/stat`);
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      ticks += Number(f[11]) + Number(f[12]); // utime, stime (fields 14 and 15)
    } catch { /* gone */ }
  }
  return ticks / 100; // USER_HZ is 100 on Linux
}

/** Runs the metadata benchmark; returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  const args = parseArgs({
    args: argv,
    options: {
      rounds: { type: "string", default: "5" },
      seconds: { type: "string", default: "3" },
      connections: { type: "string", default: "32" },
      threads: { type: "string", default: "2" },
      versions: { type: "string", default: "300" },
      "cpu-prof": { type: "string" },
      only: { type: "string" },
      json: { type: "string" },
      keep: { type: "boolean" },
      repo: { type: "string" },
      "nginx-workers": { type: "string" },
      smoke: { type: "boolean" },
    },
  });
  if (args.values.smoke) {
    // The test suite's run: every step once, as briefly as wrk allows.
    Object.assign(args.values, {
      rounds: "1",
      seconds: "1",
      connections: "4",
      versions: "20",
      only: args.values.only ?? "http",
    });
  }
  const missing = await ensurePrograms({ nginx: "nginx", wrk: "wrk", curl: "curl" }, note);
  if (missing.length > 0) {
    out(`SKIP bench: ${missing.join(", ")} not installed and cannot be installed here`);
    return 0;
  }
  const rounds = Number(args.values.rounds);
  const wrkOpts = {
    seconds: Number(args.values.seconds),
    connections: Number(args.values.connections),
    threads: Number(args.values.threads),
  };
  const work = await Deno.makeTempDir({ prefix: "repoxy-metabench-" });
  await Deno.chmod(work, 0o755);
  const children: Child[] = [];
  try {
    const tls = await makeTestTls(join(work, "tls"));
    const zipPath = join(work, "small.zip");
    await Deno.writeFile(zipPath, await makeProviderZip("meta", "1.0.0", "linux_amd64"));
    const sha256 = createHash("sha256").update(await Deno.readFile(zipPath)).digest("hex");
    const size = (await Deno.stat(zipPath)).size;
    const versions = Array.from({ length: Number(args.values.versions) }, (_, i) => ({
      version: `${Math.floor(i / 20)}.${i % 20}.0`,
      archives: PLATFORMS.map((pl): UpstreamArchive => {
        const [os, arch] = pl.split("_") as [string, string];
        return { os, arch, path: zipPath, sha256, size };
      }),
    }));
    const latest = versions[versions.length - 1]!.version;
    await using upstream = await startBenchUpstream({
      providers: [{ namespace: NS, type: "meta", versions }],
      bandwidth: 0,
      latencyMs: 0,
    });

    // Two Repoxy processes (plain and TLS), each with its own cache.
    const start = async (kind: "http" | "tls") => {
      const port = freePort();
      const cfg = join(work, `repoxy-${kind}.json`);
      await Deno.writeTextFile(
        cfg,
        JSON.stringify({
          listen: `127.0.0.1:${port}`,
          ...(kind === "tls" ? { tls: { cert: tls.certPath, key: tls.keyPath } } : {}),
          cacheDir: join(work, `cache-${kind}`),
          upstreams: { [HOST]: { url: upstream.url } },
        }),
      );
      const prof = args.values["cpu-prof"] && kind === "http"
        ? ["--cpu-prof", `--cpu-prof-dir=${resolve(args.values["cpu-prof"])}`]
        : [];
      const child = spawnLogged(
        Deno.execPath(),
        ["run", ...prof, "-P=serve", "main.ts", "serve", "--config", cfg],
        join(work, `repoxy-${kind}.log`),
        { cwd: args.values.repo ? resolve(args.values.repo) : REPO },
      );
      children.push(child);
      rPids[kind] = child.pid;
      const url = `${kind === "tls" ? "https" : "http"}://127.0.0.1:${port}`;
      await waitForHttp(`${url}/-/healthz`, 30_000, tls.caCertPem);
      return url;
    };
    const rPids: Record<string, number> = {};
    const only = args.values.only;
    const kinds = (["http", "tls"] as const).filter((k) => !only || only === k);
    const rUrls: Record<string, string> = {};
    const started = await Promise.all(kinds.map(start));
    kinds.forEach((k, i) => rUrls[k] = started[i]!);

    const files = ["index.json", `${latest}.json`];
    const path = (f: string) => `${HOST}/${NS}/meta/${f}`;
    const client = Deno.createHttpClient({ caCerts: [tls.caCertPem] });
    const jsonRoot = join(work, "json");
    for (const f of files) {
      let text = "";
      for (const k of kinds) {
        // {version}.json gains the h1: of the platform cached; nothing is
        // cached here, so the documents stay as the upstream made them.
        const res = await fetch(`${rUrls[k]}/${path(f)}`, { client });
        const t = await res.text();
        if (res.status !== 200) throw new Error(`${f} answered ${res.status}`);
        if (text && t !== text) throw new Error(`${f} differs between Repoxy processes`);
        text = t;
      }
      await Deno.mkdir(dirname(join(jsonRoot, path(f))), { recursive: true });
      await Deno.writeTextFile(join(jsonRoot, path(f)), text);
    }
    client.close();

    const nTls = freePort();
    const nPlain = freePort();
    await Deno.mkdir(join(work, "archives"));
    const nginx = await startNginx({
      dir: join(work, "nginx"),
      port: nTls,
      plainPort: nPlain,
      certPath: tls.certPath,
      keyPath: tls.keyPath,
      archiveRoot: join(work, "archives"),
      jsonRoot,
      workers: "auto",
    });
    children.push(nginx);
    const nUrls: Record<string, string> = {
      http: `http://127.0.0.1:${nPlain}`,
      tls: `https://127.0.0.1:${nTls}`,
    };
    await waitForHttp(`${nUrls.http}/`, 15_000);
    for (const k of kinds) {
      for (const f of files) {
        const [a, b] = await Promise.all([
          run("curl", ["-s", "--cacert", tls.caCertPath, `${rUrls[k]}/${path(f)}`]),
          run("curl", ["-s", "--cacert", tls.caCertPath, `${nUrls[k]}/${path(f)}`]),
        ]);
        if (a.stdout !== b.stdout || a.stdout === "") throw new Error(`${k} ${f} differs`);
      }
    }

    type Cell = {
      ratio: number[];
      r: number[];
      n: number[];
      rp99: number[];
      np99: number[];
      /** CPU microseconds per request (server processes only). */
      rCpu: number[];
      nCpu: number[];
    };
    const cells: Record<string, Cell> = {};
    // JIT warm-up of every path before anything counts.
    for (const k of args.values.smoke ? [] : kinds) {
      for (const f of files) {
        await wrkRate(`${rUrls[k]}/${path(f)}`, { ...wrkOpts, seconds: 1 });
      }
    }
    const load0 = await Deno.readTextFile("/proc/loadavg");
    for (let i = 0; i < rounds; i++) {
      for (const k of kinds) {
        for (const f of files) {
          const key = `${k} ${f === "index.json" ? "index.json" : "{version}.json"}`;
          const c = cells[key] ??= {
            ratio: [],
            r: [],
            n: [],
            rp99: [],
            np99: [],
            rCpu: [],
            nCpu: [],
          };
          const order = i % 2 ? ["n", "r"] as const : ["r", "n"] as const;
          const got: Record<string, { rps: number; p99: string; cpu: number }> = {};
          for (const who of order) {
            const pid = who === "r" ? rPids[k]! : nginx.pid;
            const cpu0 = await cpuSeconds(pid);
            const t0 = performance.now();
            const w = await wrkRate(`${(who === "r" ? rUrls : nUrls)[k]}/${path(f)}`, wrkOpts);
            const secs = (performance.now() - t0) / 1000;
            const cpu = (await cpuSeconds(pid)) - cpu0;
            // wrk's rate times the wall time of its run: the requests served.
            got[who] = { ...w, cpu: (cpu * 1e6) / (w.rps * Math.min(secs, wrkOpts.seconds)) };
          }
          c.rCpu.push(got.r!.cpu);
          c.nCpu.push(got.n!.cpu);
          c.r.push(got.r!.rps);
          c.n.push(got.n!.rps);
          c.ratio.push(got.r!.rps / got.n!.rps);
          c.rp99.push(ms(got.r!.p99));
          c.np99.push(ms(got.n!.p99));
          note(
            `${key} round ${i + 1}: repoxy ${Math.round(got.r!.rps)} req/s p99 ${got.r!.p99}, ` +
              `nginx ${Math.round(got.n!.rps)} req/s p99 ${got.n!.p99}, ratio ${
                (got.r!.rps / got.n!.rps).toFixed(2)
              }`,
          );
        }
      }
    }
    const load1 = await Deno.readTextFile("/proc/loadavg");
    out(
      `wrk -t${wrkOpts.threads} -c${wrkOpts.connections} -d${wrkOpts.seconds}s, ${rounds} rounds ` +
        `interleaved; index.json lists ${versions.length} versions, {version}.json ` +
        `${PLATFORMS.length} platforms; load average before ${
          load0.split(" ").slice(0, 3).join(" ")
        }, ` +
        `after ${load1.split(" ").slice(0, 3).join(" ")}; Deno ${Deno.version.deno}`,
    );
    out("");
    out(
      "| file, transport | Repoxy req/s | nginx req/s | ratio (median, min–max) | p99 Repoxy | " +
        "p99 nginx | CPU µs/req Repoxy | CPU µs/req nginx |",
    );
    out("|---|---|---|---|---|---|---|---|");
    for (const [key, c] of Object.entries(cells)) {
      const [k, f] = key.split(" ");
      out(
        `| ${f}, ${k === "tls" ? "TLS HTTP/1.1" : "http"} | ${Math.round(median(c.r))} | ${
          Math.round(median(c.n))
        } | ${median(c.ratio).toFixed(2)} (${Math.min(...c.ratio).toFixed(2)}–${
          Math.max(...c.ratio).toFixed(2)
        }) | ${median(c.rp99).toFixed(2)} ms | ${median(c.np99).toFixed(2)} ms | ${
          median(c.rCpu).toFixed(0)
        } | ${median(c.nCpu).toFixed(0)} |`,
      );
    }
    if (args.values.json) {
      await Deno.writeTextFile(
        args.values.json,
        JSON.stringify({ wrkOpts, rounds, cells }, null, 2),
      );
    }
    return 0;
  } finally {
    await Promise.all(children.map((c) => c.stop()));
    if (args.values.keep) note(`kept ${work}`);
    else await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
