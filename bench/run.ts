/**
 * `deno task bench`: Repoxy against nginx serving the same files, and a cold
 * miss through Repoxy against fetching straight from a bandwidth-limited
 * upstream. Everything is set up here (archives, TLS, upstream, Repoxy, nginx),
 * measured side by side in one run, and printed as one table of ratios.
 *
 *   deno task bench            full run (200 MB archive; a few minutes)
 *   deno task bench --quick    smaller sizes, about a minute
 *   deno task bench --smoke    tiny sizes, seconds (the test suite runs this)
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
import { startNginx } from "./nginx.ts";
import { COLD_PROFILES, type ColdInitResult, coldInitTableRows, runColdInit } from "./cold_init.ts";
import {
  type Child,
  curlGet,
  curlParallel,
  ensurePrograms,
  freePort,
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
    tfRuns: 3,
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

    // --- nginx -----------------------------------------------------------------
    const nPort = freePort();
    const nginx = await startNginx({
      dir: dirs.nginx,
      port: nPort,
      certPath: tls.certPath,
      keyPath: tls.keyPath,
      archiveRoot: join(dirs.cache, "packages"),
      jsonRoot: dirs.json,
      workers: args.values["nginx-workers"] ? Number(args.values["nginx-workers"]) : "auto",
    });
    children.push(nginx);
    const nUrl = `https://127.0.0.1:${nPort}`;
    await waitForHttp(`${nUrl}/`, 15_000, tls.caCertPem);

    const bigWarm = zip("big", "1.0.0", platform);
    const check = async (base: string, http: "1.1" | "2" = "1.1") => {
      const r = await curlGet(`${base}/${bigWarm}`, { ...curlTls, http });
      if (r.code !== 200 || r.bytes !== bigArchives[0]!.size) {
        throw new Error(`${base} served the warm archive wrong: ${JSON.stringify(r)}`);
      }
      return r;
    };
    const h2 = await curlGet(`${rUrl}/${pPath("meta")}/index.json`, { ...curlTls, http: "2" });
    await check(nUrl);

    // --- warm archive throughput ------------------------------------------------
    await phase("warm archive throughput, 1 client");
    const one = { r: [] as number[], n: [] as number[] };
    for (let i = 0; i < profile.reps; i++) {
      for (
        const [k, base] of (i % 2 ? [["n", nUrl], ["r", rUrl]] : [["r", rUrl], ["n", nUrl]]) as [
          "r" | "n",
          string,
        ][]
      ) {
        const x = await check(base);
        one[k].push(x.bytes / x.total);
      }
    }
    await phase("warm archive throughput, 1 client over HTTP/2");
    const oneH2 = { r: [] as number[], n: [] as number[] };
    for (let i = 0; i < Math.max(1, Math.ceil(profile.reps / 2)); i++) {
      for (const [k, base] of [["r", rUrl], ["n", nUrl]] as ["r" | "n", string][]) {
        const x = await check(base, "2");
        oneH2[k].push(x.bytes / x.total);
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
    let tf: { r: number[]; n: number[]; version: string } | undefined;
    if (terraform) {
      await phase(`terraform init with ${profile.tfProviders} providers`);
      tf = { r: [], n: [], version: (await run(terraform, ["version"])).stdout.split("\n")[0]! };
      for (let i = 0; i < profile.tfRuns; i++) {
        for (
          const [k, base] of (i % 2 ? [["n", nUrl], ["r", rUrl]] : [["r", rUrl], ["n", nUrl]]) as [
            "r" | "n",
            string,
          ][]
        ) {
          tf[k].push(
            await terraformInit(terraform, dirs.tf, `${k}${i}`, base, tfTypes, tls.caCertPath),
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
    ) => {
      const ratio = r / n;
      rows.push({
        measure,
        repoxy: fmt(r),
        baseline: fmt(n),
        ratio: ratio.toFixed(2),
        target: min === undefined ? "-" : `≥ ${min}`,
        met: min === undefined ? "-" : ratio >= min ? "yes" : "NO",
      });
    };
    ratioRow(
      "Warm archive, 1 client, HTTP/1.1 (vs nginx)",
      median(one.r),
      median(one.n),
      fmtRate,
      0.8,
    );
    ratioRow(
      `Warm archive, ${profile.parClients} clients, aggregate (vs nginx)`,
      median(par.r),
      median(par.n),
      fmtRate,
      0.8,
    );
    ratioRow(
      "Warm archive, 1 client, HTTP/2 (vs nginx)",
      median(oneH2.r),
      median(oneH2.n),
      fmtRate,
      undefined,
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
    }
    const dT = median(cold.dTtfb);
    const rT = median(cold.rTtfb);
    rows.push({
      measure: `Cold miss, time to first byte (vs direct, ${fmtRate(profile.bandwidth)})`,
      repoxy: fmtMs(rT),
      baseline: fmtMs(dT),
      ratio: `${rT >= dT ? "+" : ""}${((rT - dT) * 1000).toFixed(1)} ms`,
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
      target: "≤ 1.1",
      met: rTot / dTot <= 1.1 ? "yes" : "NO",
    });
    for (const [label, v] of [["warm", rssWarm], ["cold", rssCold]] as const) {
      rows.push({
        measure: `Peak RSS, ${profile.rssClients} concurrent ${label} downloads`,
        repoxy: fmtMb(v),
        baseline: "-",
        ratio: "-",
        target: "≤ 150 MiB",
        met: v <= 150 * 1024 * 1024 ? "yes" : "NO",
      });
    }
    rows.push({
      measure: "RSS at start (idle)",
      repoxy: fmtMb(idleRss),
      baseline: "-",
      ratio: "-",
      target: "-",
      met: "-",
    });
    if (tf) {
      const r = median(tf.r);
      const n = median(tf.n);
      rows.push({
        measure: `terraform init, ${profile.tfProviders} providers, warm (vs nginx mirror)`,
        repoxy: fmtS(r),
        baseline: fmtS(n),
        ratio: (r / n).toFixed(2),
        target: "-",
        met: "-",
      });
    }
    rows.push({
      measure: "HTTP/2 negotiated via ALPN (curl --http2)",
      repoxy: h2.httpVersion === "2" ? "yes" : `no (${h2.httpVersion})`,
      baseline: "-",
      ratio: "-",
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

    const table = [
      "| Measure | Repoxy | nginx / direct | Ratio | Target | Met |",
      "|---|---:|---:|---:|---|---|",
      ...rows.map((r) =>
        `| ${r.measure} | ${r.repoxy} | ${r.baseline} | ${r.ratio} | ${r.target} | ${r.met} |`
      ),
    ].join("\n");
    const versions = {
      deno: Deno.version.deno,
      nginx: (await run("nginx", ["-v"])).stderr.trim().replace(/^nginx version: /, ""),
      curl: (await run("curl", ["--version"])).stdout.split(" ").slice(0, 2).join(" "),
      wrk: "wrk " + (/wrk (?:debian\/)?([\w.+~-]+)/.exec((await run("wrk", ["-v"])).stdout)?.[1] ??
        "?"),
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
      `1-client medians of ${profile.reps}, ${profile.parClients}-client medians of ${profile.parReps}; ` +
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
      `Versions: Deno ${versions.deno}, ${versions.nginx}, ${versions.curl}, ${versions.wrk}, ${versions.terraform}`,
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
            raw: { one, oneH2, par, meta, cold, rssWarm, rssCold, idleRss, tf, coldInit },
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
