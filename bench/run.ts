/**
 * `deno task bench`: Repoxy against nginx serving the same files, and a cold
 * miss through Repoxy against fetching straight from a bandwidth-limited
 * upstream. Everything is set up here (archives, TLS, upstream, Repoxy, nginx),
 * measured side by side in one run, and printed as one table of ratios.
 *
 * Clients negotiate as they do by default (curl without --http1.1, a Go
 * client built from bench/goget/ standing in for Terraform's HTTP stack, and
 * terraform itself): that is what users get. Two Repoxy processes share the
 * cache, one with `tls.http2` false (the default: HTTP/1.1) and one with it
 * true (h2), and nginx listens twice, without and with `http2`, so each is
 * compared with its like and the default with nginx's HTTP/1.1 sendfile.
 * Rounds are interleaved (the order rotates each round) and each ratio row
 * shows the range of the per-round ratios next to the ratio of medians.
 *
 *   deno task bench            full run (200 MB archive; a few minutes)
 *   deno task bench --quick    smaller sizes, about a minute
 *   deno task bench --smoke    tiny sizes, seconds (the test suite runs this)
 *
 * With a Ceph RGW (tests/run.ts's, or one started here; the smoke run only
 * uses tests/run.ts's), bench/fleet.ts adds the rows of a fleet on S3.
 *
 * Options: --out FILE (markdown, default bench/out/latest.md), --json FILE,
 * --keep (keep the work dir), --no-terraform, --nginx-workers N (default
 * "auto", as Debian ships it), --cpu-prof DIR (V8 CPU profile of Repoxy,
 * written when it stops).
 * @module
 */
import { parseArgs } from "../lib/deps/cli.ts";
import { createHash } from "../lib/deps/crypto.ts";
import { dirname, fromFileUrl, join, resolve } from "../lib/deps/path.ts";
import { makeProviderZip } from "../tests/_zip.ts";
import { makeTestTls } from "../tests/_tls.ts";
import { fleetBench } from "./fleet.ts";
import { startNginx } from "./nginx.ts";
import { COLD_PROFILES, type ColdInitResult, coldInitTableRows, runColdInit } from "./cold_init.ts";
import {
  type Child,
  cpuSeconds,
  curlGet,
  curlParallel,
  ensurePrograms,
  freePort,
  goClient,
  goGet,
  median,
  memoryOf,
  peakRssDuring,
  run,
  spawnLogged,
  waitForHttp,
  which,
  wrkRate,
} from "./tools.ts";
import type { UpstreamArchive, UpstreamProvider, UpstreamSpec } from "./upstream.ts";
import { peakTreeRssDuring, rssOfAll, withChildren } from "./memory.ts";
import { writeStoredZip } from "./zipgen.ts";

const REPO = resolve(dirname(fromFileUrl(import.meta.url)), "..");
const HOST = "registry.terraform.io";
const NS = "bench";
const MB = 1_000_000;

/** Sizes and repetitions of one run. */
interface Profile {
  name: "full" | "quick" | "smoke";
  bigSize: number;
  bandwidth: number;
  latencyMs: number;
  metaVersions: number;
  tfProviders: number;
  tfSize: number;
  tfRuns: number;
  reps: number;
  parClients: number;
  parReps: number;
  wrkSeconds: number;
  wrkConnections: number;
  coldTrials: number;
  rssClients: number;
}

const PROFILES: Record<Profile["name"], Profile> = {
  full: {
    name: "full",
    bigSize: 200 * MB,
    bandwidth: 50 * MB,
    latencyMs: 20,
    metaVersions: 300,
    tfProviders: 10,
    tfSize: 10 * MB,
    // Four servers now; 3 inits of ~0.5-0.8 s each swung the ratio by ±0.3.
    tfRuns: 5,
    reps: 7,
    parClients: 8,
    parReps: 3,
    wrkSeconds: 5,
    wrkConnections: 32,
    coldTrials: 2,
    rssClients: 16,
  },
  quick: {
    name: "quick",
    bigSize: 50 * MB,
    bandwidth: 50 * MB,
    latencyMs: 20,
    metaVersions: 300,
    tfProviders: 10,
    tfSize: 2 * MB,
    tfRuns: 2,
    reps: 3,
    parClients: 8,
    parReps: 2,
    wrkSeconds: 2,
    wrkConnections: 32,
    coldTrials: 1,
    rssClients: 16,
  },
  smoke: {
    name: "smoke",
    bigSize: 2 * MB,
    bandwidth: 20 * MB,
    latencyMs: 5,
    metaVersions: 20,
    tfProviders: 2,
    tfSize: 200_000,
    tfRuns: 1,
    reps: 1,
    parClients: 2,
    parReps: 1,
    wrkSeconds: 1,
    wrkConnections: 8,
    coldTrials: 1,
    rssClients: 4,
  },
};

// deno-lint-ignore no-console
const out = (s: string) => console.log(s);
// deno-lint-ignore no-console
const note = (s: string) => console.error(`bench: ${s}`);

const COLD_PLATFORMS = [
  "linux_arm64",
  "darwin_amd64",
  "darwin_arm64",
  "windows_amd64",
  "freebsd_amd64",
];
const META_PLATFORMS = [
  "darwin_amd64",
  "darwin_arm64",
  "freebsd_amd64",
  "linux_386",
  "linux_amd64",
  "linux_arm",
  "linux_arm64",
  "windows_amd64",
];

function hostPlatform(): string {
  const arch = { x86_64: "amd64", aarch64: "arm64" }[Deno.build.arch] ?? Deno.build.arch;
  return `${Deno.build.os}_${arch}`;
}

async function sha256File(path: string): Promise<string> {
  const h = createHash("sha256");
  using f = await Deno.open(path, { read: true });
  for await (const chunk of f.readable) h.update(chunk);
  return h.digest("hex");
}

async function archiveOf(path: string, platform: string): Promise<UpstreamArchive> {
  const [os, arch] = platform.split("_") as [string, string];
  return { os, arch, path, sha256: await sha256File(path), size: (await Deno.stat(path)).size };
}

const fmtRate = (bps: number) => `${(bps / MB).toFixed(0)} MB/s`;
const fmtRps = (r: number) => `${Math.round(r).toLocaleString("en-US")} req/s`;
const fmtMs = (s: number) => `${(s * 1000).toFixed(1)} ms`;
const fmtS = (s: number) => `${s.toFixed(2)} s`;
const fmtMb = (b: number) => `${(b / 1024 / 1024).toFixed(0)} MiB`;
const fmtSize = (b: number) =>
  b >= MB ? `${(b / MB).toFixed(0)} MB` : `${(b / 1000).toFixed(0)} kB`;

/** One row of the result table. */
interface Row {
  measure: string;
  repoxy: string;
  baseline: string;
  ratio: string;
  /** Lowest–highest of the per-round ratios ("-" when not a per-round comparison). */
  range: string;
  target: string;
  met: "yes" | "NO" | "-";
}

/** Runs the benchmark; returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  const args = parseArgs({
    args: argv,
    options: {
      quick: { type: "boolean" },
      smoke: { type: "boolean" },
      keep: { type: "boolean" },
      "no-terraform": { type: "boolean" },
      out: { type: "string" },
      json: { type: "string" },
      "nginx-workers": { type: "string" },
      "cpu-prof": { type: "string" },
    },
  });
  const profile = PROFILES[args.values.smoke ? "smoke" : args.values.quick ? "quick" : "full"];
  const started = performance.now();

  const missing = await ensurePrograms(
    { nginx: "nginx", wrk: "wrk", curl: "curl", openssl: "openssl" },
    note,
  );
  // The Go client rows: installed when missing, except in the smoke run (the
  // test suite must not install packages); built once into a cache dir.
  if (profile.name !== "smoke") await ensurePrograms({ go: "golang-go" }, note);
  const goc = await goClient(note);
  if ("skip" in goc) out(`SKIP: Go client rows: ${goc.skip}`);
  if (missing.length > 0) {
    out(`SKIP bench: ${missing.join(", ")} not installed and cannot be installed here`);
    return 0;
  }
  const terraform = args.values["no-terraform"] ? undefined : await which("terraform");

  const work = await Deno.makeTempDir({ prefix: "repoxy-bench-" });
  // nginx workers may run as another user: they must reach the files.
  await Deno.chmod(work, 0o755);
  const dirs = {
    files: join(work, "files"),
    cache: join(work, "cache"),
    json: join(work, "json"),
    nginx: join(work, "nginx"),
    tls: join(work, "tls"),
    tf: join(work, "tf"),
  };
  for (const d of Object.values(dirs)) await Deno.mkdir(d, { recursive: true, mode: 0o755 });
  const children: Child[] = [];
  let upstreamStdin: WritableStreamDefaultWriter<Uint8Array> | undefined;
  const stopAll = async () => {
    await upstreamStdin?.close().catch(() => {});
    await Promise.all(children.map((c) => c.stop()));
  };
  const onSignal = () => {
    stopAll().finally(() => Deno.exit(130));
  };
  Deno.addSignalListener("SIGINT", onSignal);
  // A wedged run must end by itself.
  const watchdog = setTimeout(() => {
    note("watchdog: the run took too long; stopping");
    stopAll().finally(() => Deno.exit(1));
  }, profile.name === "full" ? 20 * 60_000 : 5 * 60_000);

  try {
    note(`profile ${profile.name}; work dir ${work}`);
    const tls = await makeTestTls(dirs.tls);
    const platform = hostPlatform();

    // --- archives and the upstream -------------------------------------------
    note(
      `writing archives (${fmtSize(profile.bigSize)} + ${profile.tfProviders} x ${
        fmtSize(profile.tfSize)
      })`,
    );
    const bigPath = join(dirs.files, "big.zip");
    await writeStoredZip(bigPath, "terraform-provider-big_v1.0.0", profile.bigSize, 1);
    const coldPlatforms = COLD_PLATFORMS.slice(0, profile.coldTrials);
    const rssColdPlatform = COLD_PLATFORMS[profile.coldTrials]!;
    const bigArchives: UpstreamArchive[] = [];
    for (const pl of [platform, ...coldPlatforms, rssColdPlatform]) {
      bigArchives.push({ ...(await archiveOf(bigPath, pl)) });
    }
    const providers: UpstreamProvider[] = [{
      namespace: NS,
      type: "big",
      versions: [{ version: "1.0.0", archives: bigArchives }],
    }];

    const smallPath = join(dirs.files, "small.zip");
    await Deno.writeFile(smallPath, await makeProviderZip("meta", "1.0.0", platform));
    const small = await archiveOf(smallPath, platform);
    const metaVersions = Array.from({ length: profile.metaVersions }, (_, i) => ({
      version: `${Math.floor(i / 20)}.${i % 20}.0`,
      archives: META_PLATFORMS.map((pl) => {
        const [os, arch] = pl.split("_") as [string, string];
        return { ...small, os, arch };
      }),
    }));
    providers.push({ namespace: NS, type: "meta", versions: metaVersions });
    const metaLatest = metaVersions[metaVersions.length - 1]!.version;

    const tfTypes: string[] = [];
    for (let i = 0; i < profile.tfProviders; i++) {
      const type = `p${i}`;
      tfTypes.push(type);
      const p = join(dirs.files, `${type}.zip`);
      await writeStoredZip(p, `terraform-provider-${type}_v1.0.0`, profile.tfSize, 100 + i);
      const archives: UpstreamArchive[] = [];
      for (const pl of [platform, "darwin_arm64", "windows_amd64"]) {
        if (pl !== platform || archives.length === 0) archives.push(await archiveOf(p, pl));
      }
      providers.push({ namespace: NS, type, versions: [{ version: "1.0.0", archives }] });
    }

    const spec: UpstreamSpec = {
      providers,
      bandwidth: profile.bandwidth,
      latencyMs: profile.latencyMs,
    };
    const specPath = join(work, "upstream.json");
    await Deno.writeTextFile(specPath, JSON.stringify(spec));
    const upPort = freePort();
    const upstream = spawnLogged(
      Deno.execPath(),
      ["run", "-P=bench", "bench/upstream.ts", specPath, String(upPort)],
      join(work, "upstream.log"),
      { cwd: REPO, stdin: "piped" },
    );
    children.push(upstream);
    upstreamStdin = upstream.process.stdin.getWriter();
    const upUrl = `http://127.0.0.1:${upPort}`;
    await waitForHttp(`${upUrl}/.well-known/terraform.json`);

    // --- Repoxy ----------------------------------------------------------------
    const rPort = freePort();
    const cfgPath = join(work, "repoxy.json");
    await Deno.writeTextFile(
      cfgPath,
      JSON.stringify({
        listen: `127.0.0.1:${rPort}`,
        tls: { cert: tls.certPath, key: tls.keyPath },
        cacheDir: dirs.cache,
        upstreams: { [HOST]: { url: upUrl } },
      }),
    );
    // The same, offering HTTP/2 (tls.http2 true), on the same cache dir.
    const r2Port = freePort();
    const cfg2Path = join(work, "repoxy-h2.json");
    await Deno.writeTextFile(
      cfg2Path,
      JSON.stringify({
        listen: `127.0.0.1:${r2Port}`,
        tls: { cert: tls.certPath, key: tls.keyPath, http2: true },
        cacheDir: dirs.cache,
        upstreams: { [HOST]: { url: upUrl } },
      }),
    );
    const repoxy = spawnLogged(
      Deno.execPath(),
      [
        "run",
        ...(args.values["cpu-prof"]
          ? ["--cpu-prof", `--cpu-prof-dir=${resolve(args.values["cpu-prof"])}`]
          : []),
        "-P=serve",
        "main.ts",
        "serve",
        "--config",
        cfgPath,
      ],
      join(work, "repoxy.log"),
      { cwd: REPO },
    );
    children.push(repoxy);
    const rUrl = `https://127.0.0.1:${rPort}`;
    await waitForHttp(`${rUrl}/-/healthz`, 30_000, tls.caCertPem);
    // A second to settle, as bench/memory.ts does (start-up garbage, timers).
    await new Promise((r) => setTimeout(r, 1000));
    const idleRss = (await memoryOf(repoxy.pid)).rss;
    /** Announces a phase with Repoxy's current RSS (memory retained by earlier phases shows here). */
    const phase = async (s: string) =>
      note(`${s} (Repoxy RSS now ${fmtMb((await memoryOf(repoxy.pid)).rss)})`);

    const client = Deno.createHttpClient({ caCerts: [tls.caCertPem] });
    const getText = async (url: string) => {
      const res = await fetch(url, { client });
      const text = await res.text();
      if (res.status !== 200) throw new Error(`${url} answered ${res.status}: ${text}`);
      return text;
    };
    const pPath = (type: string) => `${HOST}/${NS}/${type}`;
    const zip = (type: string, v: string, pl: string) =>
      `${pPath(type)}/terraform-provider-${type}_${v}_${pl}.zip`;
    const curlTls = { cacert: tls.caCertPath };
    const jsonFiles: string[] = [];
    /** Fetches {version}.json until the host platform lists its h1: (computed after caching). */
    const versionJsonWithH1 = async (type: string, v: string) => {
      for (let i = 0; i < 100; i++) {
        const text = await getText(`${rUrl}/${pPath(type)}/${v}.json`);
        const doc = JSON.parse(text) as { archives: Record<string, { hashes: string[] }> };
        if (doc.archives[platform]?.hashes.some((h) => h.startsWith("h1:"))) return text;
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error(`Repoxy never listed an h1: for ${type} ${v}`);
    };

    // --- cold misses (the first of them also warms the archive used below) ----
    await phase("cold misses: Repoxy vs straight from the upstream");
    await getText(`${rUrl}/${pPath("big")}/index.json`);
    await getText(`${rUrl}/${pPath("big")}/1.0.0.json`);
    const cold = {
      rTtfb: [] as number[],
      rTotal: [] as number[],
      dTtfb: [] as number[],
      dTotal: [] as number[],
    };
    for (const pl of [platform, ...coldPlatforms]) {
      const d = await curlGet(
        `${upUrl}/files/${NS}/big/1.0.0/terraform-provider-big_1.0.0_${pl}.zip`,
      );
      const r = await curlGet(`${rUrl}/${zip("big", "1.0.0", pl)}`, curlTls);
      for (const [who, x] of [["direct", d], ["repoxy", r]] as const) {
        if (x.code !== 200 || x.bytes !== bigArchives[0]!.size) {
          throw new Error(`cold ${who} download of ${pl} failed: ${JSON.stringify(x)}`);
        }
      }
      cold.dTtfb.push(d.ttfb);
      cold.dTotal.push(d.total);
      cold.rTtfb.push(r.ttfb);
      cold.rTotal.push(r.total);
    }

    // --- warm the rest, and export Repoxy's JSON answers for nginx ------------
    await phase("warming metadata and terraform providers");
    const exportJson = async (type: string, file: string, text: string) => {
      const p = join(dirs.json, pPath(type), file);
      await Deno.mkdir(dirname(p), { recursive: true });
      await Deno.writeTextFile(p, text);
      jsonFiles.push(p);
    };
    await exportJson("big", "index.json", await getText(`${rUrl}/${pPath("big")}/index.json`));
    await exportJson("big", "1.0.0.json", await versionJsonWithH1("big", "1.0.0"));
    await exportJson("meta", "index.json", await getText(`${rUrl}/${pPath("meta")}/index.json`));
    await getText(`${rUrl}/${pPath("meta")}/${metaLatest}.json`);
    await (await fetch(`${rUrl}/${zip("meta", metaLatest, platform)}`, { client })).arrayBuffer();
    await exportJson("meta", `${metaLatest}.json`, await versionJsonWithH1("meta", metaLatest));
    for (const type of tfTypes) {
      await exportJson(type, "index.json", await getText(`${rUrl}/${pPath(type)}/index.json`));
      await getText(`${rUrl}/${pPath(type)}/1.0.0.json`);
      await (await fetch(`${rUrl}/${zip(type, "1.0.0", platform)}`, { client })).arrayBuffer();
      await exportJson(type, "1.0.0.json", await versionJsonWithH1(type, "1.0.0"));
    }
    client.close();

    // --- Repoxy with tls.http2 true, over the now warm cache -------------------
    const repoxyH2 = spawnLogged(
      Deno.execPath(),
      ["run", "-P=serve", "main.ts", "serve", "--config", cfg2Path],
      join(work, "repoxy-h2.log"),
      { cwd: REPO },
    );
    children.push(repoxyH2);
    const r2Url = `https://127.0.0.1:${r2Port}`;
    await waitForHttp(`${r2Url}/-/healthz`, 30_000, tls.caCertPem);

    // --- nginx -----------------------------------------------------------------
    const nPort = freePort();
    const n2Port = freePort();
    const nginx = await startNginx({
      dir: dirs.nginx,
      port: nPort,
      h2Port: n2Port,
      certPath: tls.certPath,
      keyPath: tls.keyPath,
      archiveRoot: join(dirs.cache, "packages"),
      jsonRoot: dirs.json,
      workers: args.values["nginx-workers"] ? Number(args.values["nginx-workers"]) : "auto",
    });
    children.push(nginx);
    const nUrl = `https://127.0.0.1:${nPort}`;
    const n2Url = `https://127.0.0.1:${n2Port}`;
    await waitForHttp(`${nUrl}/`, 15_000, tls.caCertPem);
    await waitForHttp(`${n2Url}/`, 15_000, tls.caCertPem);
    await new Promise((r) => setTimeout(r, 500));
    /** nginx's memory for reference: master and workers together. */
    const nginxIdleRss = await rssOfAll(await withChildren(nginx.pid));

    const bigWarm = zip("big", "1.0.0", platform);
    /** The four servers: Repoxy and nginx, each offering HTTP/1.1 only and h2 too. */
    const servers = { r1: rUrl, n1: nUrl, r2: r2Url, n2: n2Url } as const;
    type Server = keyof typeof servers;
    type Client = "curl" | "go";
    const clients: Client[] = "path" in goc ? ["curl", "go"] : ["curl"];
    /** What a default client must end up with on each (checked on every download). */
    const wants: Record<Server, string> = { r1: "1.1", n1: "1.1", r2: "2", n2: "2" };
    const seen: Record<string, string> = {};
    const pids: Record<Server, number> = {
      r1: repoxy.pid,
      r2: repoxyH2.pid,
      n1: nginx.pid,
      n2: nginx.pid,
    };
    /** Server CPU seconds per GB sent, per client and server (sums over rounds). */
    const cpu: Record<Client, Record<Server, { s: number; bytes: number }>> = {
      curl: {
        r1: { s: 0, bytes: 0 },
        n1: { s: 0, bytes: 0 },
        r2: { s: 0, bytes: 0 },
        n2: { s: 0, bytes: 0 },
      },
      go: {
        r1: { s: 0, bytes: 0 },
        n1: { s: 0, bytes: 0 },
        r2: { s: 0, bytes: 0 },
        n2: { s: 0, bytes: 0 },
      },
    };
    const get = async (who: Server, c: Client) => {
      const url = `${servers[who]}/${bigWarm}`;
      const cpu0 = await cpuSeconds(pids[who]);
      const r = c === "go" && "path" in goc
        ? await goGet(goc.path, url, curlTls)
        : await curlGet(url, curlTls);
      cpu[c][who].s += await cpuSeconds(pids[who]) - cpu0;
      cpu[c][who].bytes += r.bytes;
      if (r.code !== 200 || r.bytes !== bigArchives[0]!.size) {
        throw new Error(`${who} served the warm archive wrong to ${c}: ${JSON.stringify(r)}`);
      }
      if (r.httpVersion !== wants[who]) {
        throw new Error(`${c} got HTTP/${r.httpVersion} from ${who}, not ${wants[who]}`);
      }
      seen[`${who}/${c}`] = r.httpVersion;
      return r;
    };
    for (const who of Object.keys(servers) as Server[]) {
      for (const c of clients) await get(who, c);
    }
    for (const c of clients) {
      for (const who of Object.keys(servers) as Server[]) cpu[c][who] = { s: 0, bytes: 0 };
    }

    // --- warm archive throughput ------------------------------------------------
    await phase(`warm archive throughput, 1 client (${clients.join(" and ")}), 4 servers`);
    const one: Record<Client, Record<Server, number[]>> = {
      curl: { r1: [], n1: [], r2: [], n2: [] },
      go: { r1: [], n1: [], r2: [], n2: [] },
    };
    const order = Object.keys(servers) as Server[];
    for (let i = 0; i < profile.reps; i++) {
      // Each round rotates the order, so no server always runs after another.
      const round = [...order.slice(i % 4), ...order.slice(0, i % 4)];
      for (const who of round) {
        for (const c of i % 2 ? [...clients].reverse() : clients) {
          const x = await get(who, c);
          one[c][who].push(x.bytes / x.total);
        }
      }
    }
    await phase(`warm archive throughput, ${profile.parClients} clients`);
    const par = { r: [] as number[], n: [] as number[] };
    for (let i = 0; i < profile.parReps; i++) {
      for (
        const [k, base] of (i % 2 ? [["n", nUrl], ["r", rUrl]] : [["r", rUrl], ["n", nUrl]]) as [
          "r" | "n",
          string,
        ][]
      ) {
        const x = await curlParallel(`${base}/${bigWarm}`, profile.parClients, curlTls);
        if (x.results.some((y) => y.code !== 200 || y.bytes !== bigArchives[0]!.size)) {
          throw new Error(`${base}: a parallel download failed`);
        }
        par[k].push(x.rate);
      }
    }

    // --- metadata request rate ---------------------------------------------------
    const wrkOpts = {
      connections: profile.wrkConnections,
      threads: 2,
      seconds: profile.wrkSeconds,
    };
    const meta: Record<string, { r: number; n: number; rp99: string; np99: string }> = {};
    for (const file of ["index.json", `${metaLatest}.json`]) {
      await phase(`metadata rate: ${file}`);
      const path = `${pPath("meta")}/${file}`;
      // Same bytes from both, or the comparison means nothing.
      const [a, b] = await Promise.all([
        run("curl", ["-s", "--cacert", tls.caCertPath, `${rUrl}/${path}`]),
        run("curl", ["-s", "--cacert", tls.caCertPath, `${nUrl}/${path}`]),
      ]);
      if (a.stdout !== b.stdout || a.stdout === "") throw new Error(`${file} differs`);
      if (profile.name !== "smoke") await wrkRate(`${rUrl}/${path}`, { ...wrkOpts, seconds: 1 }); // JIT warm-up
      const r = await wrkRate(`${rUrl}/${path}`, wrkOpts);
      const n = await wrkRate(`${nUrl}/${path}`, wrkOpts);
      meta[file] = { r: r.rps, n: n.rps, rp99: r.p99, np99: n.p99 };
    }

    // --- memory under 16 concurrent downloads ------------------------------------
    await phase(`peak RSS, ${profile.rssClients} concurrent warm downloads`);
    const rssWarm = await peakRssDuring(repoxy.pid, async () => {
      const x = await curlParallel(`${rUrl}/${bigWarm}`, profile.rssClients, curlTls);
      if (x.results.some((y) => y.code !== 200)) throw new Error("a warm download failed");
    });
    const nginxRssWarm = await peakTreeRssDuring(nginx.pid, async () => {
      const x = await curlParallel(`${nUrl}/${bigWarm}`, profile.rssClients, curlTls);
      if (x.results.some((y) => y.code !== 200)) throw new Error("a warm nginx download failed");
    });
    await phase(`peak RSS, ${profile.rssClients} concurrent cold downloads`);
    const rssCold = await peakRssDuring(repoxy.pid, async () => {
      const x = await curlParallel(
        `${rUrl}/${zip("big", "1.0.0", rssColdPlatform)}`,
        profile.rssClients,
        curlTls,
      );
      if (x.results.some((y) => y.code !== 200 || y.bytes !== bigArchives[0]!.size)) {
        throw new Error(`a cold download failed: ${JSON.stringify(x.results)}`);
      }
    });

    // --- terraform init ----------------------------------------------------------
    let tf: { runs: Record<Server, number[]>; version: string } | undefined;
    if (terraform) {
      await phase(`terraform init with ${profile.tfProviders} providers, 4 servers`);
      tf = {
        runs: { r1: [], n1: [], r2: [], n2: [] },
        version: (await run(terraform, ["version"])).stdout.split("\n")[0]!,
      };
      // Untimed: the first init of a run pays for terraform's own start-up
      // (binary and Go runtime cold), which would land on whichever server
      // comes first (it was 1.5-3x the others).
      for (const who of order) {
        await terraformInit(
          terraform,
          dirs.tf,
          `warmup-${who}`,
          servers[who],
          tfTypes,
          tls.caCertPath,
        );
      }
      for (let i = 0; i < profile.tfRuns; i++) {
        const round = [...order.slice(i % 4), ...order.slice(0, i % 4)];
        for (const who of round) {
          tf.runs[who].push(
            await terraformInit(
              terraform,
              dirs.tf,
              `${who}-${i}`,
              servers[who],
              tfTypes,
              tls.caCertPath,
            ),
          );
        }
      }
    }

    // --- the table -------------------------------------------------------------
    const rows: Row[] = [];
    const ratioRow = (
      measure: string,
      r: number,
      n: number,
      fmt: (x: number) => string,
      min: number | undefined,
      rounds?: { r: number[]; n: number[] },
    ) => {
      const ratio = r / n;
      const per = rounds ? rounds.r.map((x, i) => x / rounds.n[i]!) : [];
      rows.push({
        measure,
        repoxy: fmt(r),
        baseline: fmt(n),
        ratio: ratio.toFixed(2),
        range: per.length > 1
          ? `${Math.min(...per).toFixed(2)}–${Math.max(...per).toFixed(2)}`
          : "-",
        target: min === undefined ? "-" : `≥ ${min}`,
        met: min === undefined ? "-" : ratio >= min ? "yes" : "NO",
      });
    };
    const clientLabel: Record<Client, string> = {
      curl: "curl default",
      go: "Go client",
    };
    for (const c of ["curl", "go"] as const) {
      const pairs = [
        ["r1", "n1", "Repoxy HTTP/1.1 (default) vs nginx HTTP/1.1 sendfile", 1.1],
        ["r2", "n2", "Repoxy h2 (tls.http2) vs nginx h2", undefined],
        ["r2", "n1", "Repoxy h2 (tls.http2) vs nginx HTTP/1.1 sendfile", undefined],
      ] as const;
      for (const [a, b, what, min] of pairs) {
        const measure = `Warm archive, 1 client, ${clientLabel[c]}: ${what}`;
        if (!clients.includes(c)) {
          rows.push({
            measure,
            repoxy: "skipped",
            baseline: "skipped",
            ratio: "-",
            range: "-",
            target: min === undefined ? "-" : `≥ ${min}`,
            met: "-",
          });
          continue;
        }
        ratioRow(measure, median(one[c][a]), median(one[c][b]), fmtRate, min, {
          r: one[c][a],
          n: one[c][b],
        });
      }
    }
    // Server CPU per GB, the same downloads: less sensitive to other load than
    // throughput (lower is better; the ratio is Repoxy / nginx).
    const perGb = (x: { s: number; bytes: number }) => x.bytes > 0 ? x.s / (x.bytes / 1e9) : NaN;
    for (const c of clients) {
      for (
        const [a, b, what] of [["r1", "n1", "HTTP/1.1 (default) vs nginx HTTP/1.1"], [
          "r2",
          "n2",
          "h2 (tls.http2) vs nginx h2",
        ]] as const
      ) {
        const r = perGb(cpu[c][a]);
        const n = perGb(cpu[c][b]);
        rows.push({
          measure: `Server CPU per GB sent, warm archive, ${clientLabel[c]}: Repoxy ${what}`,
          repoxy: `${r.toFixed(2)} s/GB`,
          baseline: `${n.toFixed(2)} s/GB`,
          // CPU time comes in 10 ms ticks: tiny (smoke) runs may show none.
          ratio: r > 0 && n > 0 ? (r / n).toFixed(2) : "-",
          range: "-",
          target: "-",
          met: "-",
        });
      }
    }
    ratioRow(
      `Warm archive, ${profile.parClients} clients, curl default, aggregate (vs nginx HTTP/1.1)`,
      median(par.r),
      median(par.n),
      fmtRate,
      0.8,
      par,
    );
    for (const [file, m] of Object.entries(meta)) {
      const label = file === "index.json" ? "index.json" : `{version}.json (${file})`;
      ratioRow(
        `Warm ${label}, wrk ${profile.wrkConnections} conns (vs nginx)`,
        m.r,
        m.n,
        fmtRps,
        0.5,
      );
      rows[rows.length - 1]!.baseline += ` (p99 ${m.np99})`;
      rows[rows.length - 1]!.repoxy += ` (p99 ${m.rp99})`;
    }
    const dT = median(cold.dTtfb);
    const rT = median(cold.rTtfb);
    rows.push({
      measure: `Cold miss, time to first byte (vs direct, ${fmtRate(profile.bandwidth)})`,
      repoxy: fmtMs(rT),
      baseline: fmtMs(dT),
      ratio: `${rT >= dT ? "+" : ""}${((rT - dT) * 1000).toFixed(1)} ms`,
      range: "-",
      target: "≤ +50 ms",
      met: rT - dT <= 0.05 ? "yes" : "NO",
    });
    const dTot = median(cold.dTotal);
    const rTot = median(cold.rTotal);
    rows.push({
      measure: `Cold miss, total time, ${fmtSize(profile.bigSize)} (vs direct)`,
      repoxy: fmtS(rTot),
      baseline: fmtS(dTot),
      ratio: (rTot / dTot).toFixed(2),
      range: "-",
      target: "≤ 1.1",
      met: rTot / dTot <= 1.1 ? "yes" : "NO",
    });
    // Memory targets of issue 12; nginx (master + workers) alongside for reference.
    const MiB = 1024 * 1024;
    rows.push({
      measure: `Peak RSS, ${profile.rssClients} concurrent warm downloads (nginx for reference)`,
      repoxy: fmtMb(rssWarm),
      baseline: fmtMb(nginxRssWarm),
      ratio: "-",
      range: "-",
      target: "≤ 80 MiB",
      met: rssWarm <= 80 * MiB ? "yes" : "NO",
    });
    rows.push({
      measure: `Peak RSS, ${profile.rssClients} concurrent cold downloads`,
      repoxy: fmtMb(rssCold),
      baseline: "-",
      ratio: "-",
      range: "-",
      target: "≤ 150 MiB",
      met: rssCold <= 150 * MiB ? "yes" : "NO",
    });
    rows.push({
      measure: "RSS at start (idle; nginx for reference)",
      repoxy: fmtMb(idleRss),
      baseline: fmtMb(nginxIdleRss),
      ratio: "-",
      range: "-",
      target: "≤ 50 MiB",
      met: idleRss <= 50 * MiB ? "yes" : "NO",
    });
    if (tf) {
      const tfPairs = [
        ["r1", "n1", "Repoxy HTTP/1.1 (default) vs nginx HTTP/1.1", "≤ 1.0"],
        ["r2", "n2", "Repoxy h2 (tls.http2) vs nginx h2", "-"],
      ] as const;
      for (const [a, b, what, target] of tfPairs) {
        const r = median(tf.runs[a]);
        const n = median(tf.runs[b]);
        const per = tf.runs[a].map((x, i) => x / tf!.runs[b][i]!);
        rows.push({
          measure: `terraform init, ${profile.tfProviders} providers, warm: ${what}`,
          repoxy: fmtS(r),
          baseline: fmtS(n),
          ratio: (r / n).toFixed(2),
          range: per.length > 1
            ? `${Math.min(...per).toFixed(2)}–${Math.max(...per).toFixed(2)}`
            : "-",
          target,
          met: target === "-" ? "-" : r / n <= 1.0 ? "yes" : "NO",
        });
      }
    }
    const proto = (who: Server) =>
      clients.map((c) => (seen[`${who}/${c}`] === "2" ? "h2" : `HTTP/${seen[`${who}/${c}`]}`))
        .join(", ");
    rows.push({
      measure: `Protocol default clients get (${clients.join(", ")}): default / tls.http2 true`,
      repoxy: `${proto("r1")} / ${proto("r2")}`,
      baseline: `${proto("n1")} / ${proto("n2")}`,
      ratio: "-",
      range: "-",
      target: "-",
      met: "-",
    });

    // --- cold terraform init vs direct (issue 12 point 3; bench/cold_init.ts) ----
    let coldInit: ColdInitResult | undefined;
    if (terraform) {
      await phase("cold terraform init vs direct (fresh Repoxy and cache per init)");
      coldInit = await runColdInit({ ...COLD_PROFILES[profile.name], log: note });
      if (coldInit) rows.push(...coldInitTableRows(coldInit));
    }

    // --- the fleet on S3 (issue 13; bench/fleet.ts), when an RGW is available -----
    await phase("fleet on S3: replicas on one RGW bucket");
    const fleet = await fleetBench({ profile: profile.name, log: note });
    if ("skip" in fleet) out(`SKIP: fleet rows: ${fleet.skip}`);
    else rows.push(...fleet.rows);

    const table = [
      "| Measure | Repoxy | nginx / direct | Ratio | Per-round range | Target | Met |",
      "|---|---:|---:|---:|---:|---|---|",
      ...rows.map((r) =>
        `| ${r.measure} | ${r.repoxy} | ${r.baseline} | ${r.ratio} | ${r.range} | ${r.target} | ${r.met} |`
      ),
    ].join("\n");
    const versions = {
      deno: Deno.version.deno,
      nginx: (await run("nginx", ["-v"])).stderr.trim().replace(/^nginx version: /, ""),
      curl: (await run("curl", ["--version"])).stdout.split(" ").slice(0, 2).join(" "),
      wrk: "wrk " + (/wrk (?:debian\/)?([\w.+~-]+)/.exec((await run("wrk", ["-v"])).stdout)?.[1] ??
        "?"),
      go: "path" in goc
        ? (await run("go", ["version"])).stdout.trim().replace(/^go version /, "")
        : "skipped",
      terraform: tf?.version ??
        (args.values["no-terraform"] ? "terraform skipped" : "terraform not installed"),
      cpus: navigator.hardwareConcurrency,
      cpuModel: ((await Deno.readTextFile("/proc/cpuinfo").catch(() => "")).match(
        /model name\s*:\s*(.+)/,
      )?.[1] ?? "unknown").trim(),
      kernel: Deno.osRelease(),
      memTotal: fmtMb(Deno.systemMemoryInfo().total),
    };
    const seconds = (performance.now() - started) / 1000;
    const settings = `profile ${profile.name}; archive ${fmtSize(profile.bigSize)}; upstream ` +
      `${fmtRate(profile.bandwidth)} per response + ${profile.latencyMs} ms latency; ` +
      `1-client medians of ${profile.reps} rounds (4 servers x ${
        clients.join(" + ")
      }, order rotating), ` +
      `${profile.parClients}-client medians of ${profile.parReps}; terraform medians of ${profile.tfRuns}; ` +
      `wrk -t2 -c${profile.wrkConnections} -d${profile.wrkSeconds}s; ` +
      `nginx worker_processes ${args.values["nginx-workers"] ?? "auto"}; ` +
      `{version}.json lists ${META_PLATFORMS.length} platforms, index.json ${profile.metaVersions} versions; ` +
      `run took ${seconds.toFixed(0)} s`;
    const md = [
      `Repoxy benchmark (${new Date().toISOString()})`,
      "",
      table,
      "",
      settings,
      "",
      `Machine: ${versions.cpus} CPUs (${versions.cpuModel}), ${versions.memTotal} RAM, Linux ${versions.kernel}`,
      `Versions: Deno ${versions.deno}, ${versions.nginx}, ${versions.curl}, ${versions.wrk}, Go client ${versions.go}, ${versions.terraform}`,
      "",
    ].join("\n");
    out(md);
    const outPath = args.values.out ?? join(REPO, "bench", "out", "latest.md");
    await Deno.mkdir(dirname(outPath), { recursive: true });
    await Deno.writeTextFile(outPath, md);
    if (args.values.json) {
      await Deno.writeTextFile(
        args.values.json,
        JSON.stringify(
          {
            profile,
            rows,
            versions,
            raw: {
              one,
              cpu,
              seen,
              par,
              meta,
              cold,
              rssWarm,
              rssCold,
              idleRss,
              nginxIdleRss,
              nginxRssWarm,
              tf,
              coldInit,
              fleet: "raw" in fleet ? fleet.raw : fleet.skip,
            },
          },
          null,
          2,
        ),
      );
    }
    return 0;
  } finally {
    clearTimeout(watchdog);
    Deno.removeSignalListener("SIGINT", onSignal);
    await stopAll();
    if (args.values.keep) note(`kept ${work}`);
    else await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}

/** One `terraform init` in a fresh directory through the mirror at `base`; returns seconds. */
async function terraformInit(
  terraform: string,
  root: string,
  name: string,
  base: string,
  types: string[],
  caCertPath: string,
): Promise<number> {
  const dir = join(root, name);
  await Deno.mkdir(join(dir, "home"), { recursive: true });
  const cli = join(dir, "cli.tfrc");
  await Deno.writeTextFile(
    cli,
    `provider_installation {\n  network_mirror {\n    url = "${base}/"\n  }\n}\n`,
  );
  const reqs = types.map((t) => `    ${t} = { source = "${NS}/${t}", version = "1.0.0" }`);
  await Deno.writeTextFile(
    join(dir, "main.tf"),
    `terraform {\n  required_providers {\n${reqs.join("\n")}\n  }\n}\n`,
  );
  const env = {
    PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
    HOME: join(dir, "home"),
    TF_CLI_CONFIG_FILE: cli,
    SSL_CERT_FILE: caCertPath,
    CHECKPOINT_DISABLE: "1",
    TF_IN_AUTOMATION: "1",
  };
  const t0 = performance.now();
  const r = await run(terraform, ["init", "-input=false", "-no-color"], {
    cwd: dir,
    env,
    clearEnv: true,
    timeoutMs: 120_000,
  });
  const secs = (performance.now() - t0) / 1000;
  if (r.code !== 0) throw new Error(`terraform init via ${base} failed:\n${r.stdout}\n${r.stderr}`);
  return secs;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
