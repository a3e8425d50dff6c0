/**
 * Memory of a real `repoxy serve` process (issue 12 point 4): RSS at idle
 * after start, after the first metadata requests, and the peak while 16
 * clients download a warm 200 MB archive at once with curl's default protocol
 * negotiation; nginx serving the same file alongside for reference. Not part
 * of the test suite; `bench/run.ts` uses {@link measureRepoxyMemory} for its rows.
 *
 *   deno run -P=bench bench/memory.ts [--repo DIR] [--size-mb 200] [--clients 16]
 *     [--runs 3] [--proto https,http] [--no-nginx] [--v8-flags=FLAGS ...] [--env "K=V ..." ...]
 *     [--throughput] [--wrk] [--http1.1] [--json]
 *
 * `--repo` is the checkout whose `main.ts` is run, so two versions can be
 * measured interleaved (`--repo A --repo B`: runs alternate A, B, A, B ...).
 * Each run starts a fresh process on a cache that already holds the archive.
 * Several `--v8-flags=` or `--env` values are variants measured side by side
 * (`--v8-flags=` alone is the variant without flags). `--throughput` adds one
 * client's download rate, `--wrk` a `{version}.json` load, to see what a
 * memory setting costs; `--http1.1` makes curl ask for HTTP/1.1 over TLS.
 * @module
 */
import { parseArgs } from "../lib/deps/cli.ts";
import { createHash } from "../lib/deps/crypto.ts";
import { dirname, fromFileUrl, join, resolve } from "../lib/deps/path.ts";
import { makeTestTls } from "../tests/_tls.ts";
import { startNginx } from "./nginx.ts";
import {
  freePort,
  memoryOf,
  peakRssDuring,
  run,
  spawnLogged,
  waitForHttp,
  wrkRate,
} from "./tools.ts";
import { startBenchUpstream, type UpstreamSpec } from "./upstream.ts";
import { writeStoredZip } from "./zipgen.ts";

const REPO = resolve(dirname(fromFileUrl(import.meta.url)), "..");
const HOST = "registry.terraform.io";
const MiB = 1024 * 1024;

/** RSS figures of one Repoxy process, in bytes. */
export interface RepoxyMemory {
  /** VmRSS once it answers /-/healthz and has been left alone for a second. */
  idle: number;
  /** VmRSS after `index.json` and `{version}.json` of one provider (cache hits). */
  afterMetadata: number;
  /** Highest RSS while `clients` curl processes download the warm archive at once. */
  peak: number;
  /** HTTP version curl negotiated (`1.1` or `2`). */
  httpVersion: string;
  /**
   * VmRSS after one `{version}.json` miss, whose release signature is checked
   * (OpenPGP loaded), and the peak of the same downloads after it.
   */
  afterSignature: number;
  peakAfterSignature: number;
  /** One client's download rate of the warm archive, bytes/s (median of 3), when asked for. */
  rate?: number;
  /** `{version}.json` hits per second under wrk (32 connections, 3 s), when asked for. */
  metadataRps?: number;
  /** VmRSS 1 s after that wrk load (what a busy server keeps). */
  afterWrk?: number;
}

/** Where a prepared, warm cache is and how to reach its archive. */
export interface MemoryFixture {
  repo: string;
  cacheDir: string;
  upstreamUrl: string;
  /** Path of the archive below the mirror root. */
  archivePath: string;
  /** Path of `index.json` below the mirror root. */
  indexPath: string;
  /** Path of `{version}.json` below the mirror root. */
  versionPath: string;
  /** A `{version}.json` path not cached yet (each call gives another). */
  nextColdVersionPath(): string;
  size: number;
  tls: { certPath: string; keyPath: string; caCertPath: string; caCertPem: string };
  work: string;
}

/** Sum of VmRSS over processes (nginx: master and workers). */
export async function rssOfAll(pids: number[]): Promise<number> {
  let sum = 0;
  for (const p of pids) sum += await memoryOf(p).then((m) => m.rss, () => 0);
  return sum;
}

/** The pids of `pid` and its direct children. */
export async function withChildren(pid: number): Promise<number[]> {
  const r = await run("pgrep", ["-P", String(pid)]);
  return [pid, ...r.stdout.split("\n").filter((s) => s.trim()).map(Number)];
}

/** Extra curl arguments (`--http1.1` to see HTTP/1.1 over TLS); none by default. */
const curlExtra: string[] = [];

/** curl with default protocol negotiation (unless `curlExtra` says otherwise), to /dev/null. */
async function curlDefault(url: string, cacert: string | undefined): Promise<[number, string]> {
  const args = ["-s", "-o", "/dev/null", "--max-time", "300", "-w", "%{http_code} %{http_version}"];
  args.push(...curlExtra);
  if (cacert) args.push("--cacert", cacert);
  const r = await run("curl", [...args, url], { timeoutMs: 310_000 });
  const [code, ver] = r.stdout.trim().split(" ");
  return [Number(code), ver ?? ""];
}

async function parallel(url: string, n: number, cacert: string | undefined): Promise<string> {
  const rs = await Promise.all(Array.from({ length: n }, () => curlDefault(url, cacert)));
  const bad = rs.filter(([c]) => c !== 200);
  if (bad.length) throw new Error(`${bad.length} of ${n} downloads of ${url} failed: ${bad}`);
  return rs[0]![1];
}

/**
 * Starts `repoxy serve` from `fx.repo` on the warm cache, measures it, stops it.
 * `v8Flags` go to `--v8-flags=` of the served process.
 */
export async function measureRepoxyMemory(
  fx: MemoryFixture,
  opts: {
    https: boolean;
    clients: number;
    v8Flags?: string;
    repo?: string;
    env?: Record<string, string>;
    /** Also time one client's download (after the peak). */
    throughput?: boolean;
    /** Also load `{version}.json` with wrk (after the peak). */
    wrk?: boolean;
  },
): Promise<RepoxyMemory> {
  const port = freePort();
  const cfg = join(fx.work, `repoxy-${port}.json`);
  await Deno.writeTextFile(
    cfg,
    JSON.stringify({
      listen: `127.0.0.1:${port}`,
      ...(opts.https ? { tls: { cert: fx.tls.certPath, key: fx.tls.keyPath } } : {}),
      cacheDir: fx.cacheDir,
      upstreams: { [HOST]: { url: fx.upstreamUrl } },
      egressAllow: ["127.0.0.1"],
    }),
  );
  const repo = opts.repo ?? fx.repo;
  const child = spawnLogged(
    Deno.execPath(),
    [
      "run",
      ...(opts.v8Flags ? [`--v8-flags=${opts.v8Flags}`] : []),
      "-P=serve",
      "main.ts",
      "serve",
      "--config",
      cfg,
    ],
    join(fx.work, `repoxy-${port}.log`),
    { cwd: repo, ...(opts.env ? { env: opts.env } : {}) },
  );
  try {
    const base = `${opts.https ? "https" : "http"}://127.0.0.1:${port}`;
    const ca = opts.https ? fx.tls.caCertPath : undefined;
    await waitForHttp(`${base}/-/healthz`, 30_000, opts.https ? fx.tls.caCertPem : undefined);
    await new Promise((r) => setTimeout(r, 1000));
    const idle = (await memoryOf(child.pid)).rss;
    for (const p of [fx.indexPath, fx.versionPath]) {
      const [code] = await curlDefault(`${base}/${p}`, ca);
      if (code !== 200) throw new Error(`${p} answered ${code}`);
    }
    await new Promise((r) => setTimeout(r, 500));
    const afterMetadata = (await memoryOf(child.pid)).rss;
    let httpVersion = "";
    const peak = await peakRssDuring(child.pid, async () => {
      httpVersion = await parallel(`${base}/${fx.archivePath}`, opts.clients, ca);
    });
    const [code] = await curlDefault(`${base}/${fx.nextColdVersionPath()}`, ca);
    if (code !== 200) {
      const log = await Deno.readTextFile(join(fx.work, `repoxy-${port}.log`));
      throw new Error(`a cold {version}.json answered ${code}:\n${log.slice(-3000)}`);
    }
    await new Promise((r) => setTimeout(r, 500));
    const afterSignature = (await memoryOf(child.pid)).rss;
    const peakAfterSignature = await peakRssDuring(child.pid, async () => {
      await parallel(`${base}/${fx.archivePath}`, opts.clients, ca);
    });
    const m: RepoxyMemory = {
      idle,
      afterMetadata,
      peak,
      httpVersion,
      afterSignature,
      peakAfterSignature,
    };
    if (opts.wrk) {
      const w = await wrkRate(`${base}/${fx.versionPath}`, {
        connections: 32,
        threads: 2,
        seconds: 3,
      });
      m.metadataRps = w.rps;
      await new Promise((r) => setTimeout(r, 1000));
      m.afterWrk = (await memoryOf(child.pid)).rss;
    }
    if (!opts.throughput) return m;
    const secs: number[] = [];
    for (let i = 0; i < 3; i++) {
      const t0 = performance.now();
      await parallel(`${base}/${fx.archivePath}`, 1, ca);
      secs.push((performance.now() - t0) / 1000);
    }
    secs.sort((a, b) => a - b);
    m.rate = fx.size / secs[1]!;
    return m;
  } finally {
    await child.stop();
  }
}

/** nginx (HTTPS, same file, same certificate): idle RSS and peak under `clients` downloads. */
export async function measureNginxMemory(
  fx: MemoryFixture,
  clients: number,
): Promise<{ idle: number; peak: number }> {
  const port = freePort();
  const json = join(fx.work, "nginx-json");
  await Deno.mkdir(json, { recursive: true });
  const nginx = await startNginx({
    dir: join(fx.work, `nginx-${port}`),
    port,
    certPath: fx.tls.certPath,
    keyPath: fx.tls.keyPath,
    archiveRoot: join(fx.cacheDir, "packages"),
    jsonRoot: json,
  });
  try {
    const base = `https://127.0.0.1:${port}`;
    await waitForHttp(`${base}/`, 15_000, fx.tls.caCertPem);
    await new Promise((r) => setTimeout(r, 500));
    const idle = await rssOfAll(await withChildren(nginx.pid));
    const peak = await peakTreeRssDuring(nginx.pid, async () => {
      await parallel(`${base}/${fx.archivePath}`, clients, fx.tls.caCertPath);
    });
    return { idle, peak };
  } finally {
    await nginx.stop();
  }
}

/**
 * The highest summed VmRSS of `pid` and its children (nginx's master and
 * workers), sampled every 20 ms while `work` runs.
 */
export async function peakTreeRssDuring(pid: number, work: () => Promise<void>): Promise<number> {
  const pids = await withChildren(pid);
  let peak = await rssOfAll(pids);
  let running = true;
  const sampler = (async () => {
    while (running) {
      peak = Math.max(peak, await rssOfAll(pids));
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  try {
    await work();
  } finally {
    running = false;
    await sampler;
  }
  return peak;
}

async function sha256File(path: string): Promise<string> {
  const h = createHash("sha256");
  using f = await Deno.open(path, { read: true });
  for await (const chunk of f.readable) h.update(chunk);
  return h.digest("hex");
}

/**
 * Writes a `sizeBytes` archive, starts an in-process upstream serving it, and
 * fills a cache with it through one `repoxy serve` of `repo`.
 */
export async function prepareMemoryFixture(
  repo: string,
  sizeBytes: number,
): Promise<MemoryFixture & AsyncDisposable> {
  const work = await Deno.makeTempDir({ prefix: "repoxy-mem-" });
  await Deno.chmod(work, 0o755);
  const tls = await makeTestTls(join(work, "tls"));
  const zipPath = join(work, "big.zip");
  await writeStoredZip(zipPath, "terraform-provider-big_v1.0.0", sizeBytes, 1);
  const size = (await Deno.stat(zipPath)).size;
  const smallPath = join(work, "small.zip");
  await writeStoredZip(smallPath, "terraform-provider-big_v2.0.0", 100_000, 2);
  const small = {
    os: "linux",
    arch: "amd64",
    path: smallPath,
    sha256: await sha256File(smallPath),
    size: (await Deno.stat(smallPath)).size,
  };
  /** Versions whose {version}.json is fetched once each, cold. */
  const cold = Array.from({ length: 200 }, (_, i) => `2.0.${i}`);
  const spec: UpstreamSpec = {
    providers: [{
      namespace: "bench",
      type: "big",
      versions: [{
        version: "1.0.0",
        archives: [{
          os: "linux",
          arch: "amd64",
          path: zipPath,
          sha256: await sha256File(zipPath),
          size,
        }],
      }, ...cold.map((version) => ({ version, archives: [small] }))],
    }],
    bandwidth: 0,
    latencyMs: 0,
  };
  const upstream = await startBenchUpstream(spec);
  const cacheDir = join(work, "cache");
  await Deno.mkdir(cacheDir, { recursive: true, mode: 0o755 });
  const fx: MemoryFixture & AsyncDisposable = {
    repo,
    cacheDir,
    upstreamUrl: upstream.url,
    archivePath: `${HOST}/bench/big/terraform-provider-big_1.0.0_linux_amd64.zip`,
    indexPath: `${HOST}/bench/big/index.json`,
    versionPath: `${HOST}/bench/big/1.0.0.json`,
    nextColdVersionPath: () => {
      const v = cold.shift();
      if (!v) throw new Error("out of cold versions");
      return `${HOST}/bench/big/${v}.json`;
    },
    size,
    tls: {
      certPath: tls.certPath,
      keyPath: tls.keyPath,
      caCertPath: tls.caCertPath,
      caCertPem: tls.caCertPem,
    },
    work,
    async [Symbol.asyncDispose]() {
      await upstream.close();
      await Deno.remove(work, { recursive: true }).catch(() => {});
    },
  };
  // One run warms the cache (the archive and its metadata).
  await measureRepoxyMemory(fx, { https: false, clients: 1 });
  return fx;
}

const fmt = (b: number) => `${(b / MiB).toFixed(1)} MiB`;

async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      repo: { type: "string", multiple: true },
      "size-mb": { type: "string" },
      clients: { type: "string" },
      runs: { type: "string" },
      proto: { type: "string" },
      "no-nginx": { type: "boolean" },
      "v8-flags": { type: "string", multiple: true },
      env: { type: "string", multiple: true },
      json: { type: "boolean" },
      throughput: { type: "boolean" },
      wrk: { type: "boolean" },
      "http1.1": { type: "boolean" },
    },
  });
  const repos = (values.repo?.length ? values.repo : [REPO]).map((r) => resolve(r));
  const flagsList = values["v8-flags"]?.length ? values["v8-flags"] : [""];
  // Each --env is one variant: "A=1 B=2" (space-separated pairs), or "" for none.
  const envList = values.env?.length ? values.env : [""];
  const clients = Number(values.clients ?? 16);
  if (values["http1.1"]) curlExtra.push("--http1.1");
  const runs = Number(values.runs ?? 3);
  const protos = (values.proto ?? "https,http").split(",");
  await using fx = await prepareMemoryFixture(repos[0]!, Number(values["size-mb"] ?? 200) * 1e6);
  const rows: unknown[] = [];
  for (let i = 0; i < runs; i++) {
    for (const proto of protos) {
      for (const repo of repos) {
        for (const v8Flags of flagsList) {
          for (const envSpec of envList) {
            const env = Object.fromEntries(
              envSpec.split(" ").filter((s) => s.includes("=")).map((s) => {
                const at = s.indexOf("=");
                return [s.slice(0, at), s.slice(at + 1)];
              }),
            );
            const m = await measureRepoxyMemory(fx, {
              https: proto === "https",
              clients,
              repo,
              env,
              throughput: values.throughput ?? false,
              wrk: values.wrk ?? false,
              ...(v8Flags ? { v8Flags } : {}),
            });
            rows.push({ run: i, proto, repo, v8Flags, env: envSpec, ...m });
            const tag = [v8Flags, envSpec].filter((s) => s).join(" ");
            // deno-lint-ignore no-console
            console.log(
              `run ${i} ${proto} ${repo}${tag ? ` [${tag}]` : ""}: idle ${fmt(m.idle)}, ` +
                `after metadata ${fmt(m.afterMetadata)}, peak ${fmt(m.peak)}` +
                ` (HTTP/${m.httpVersion}); after a signature check ${fmt(m.afterSignature)},` +
                ` peak ${fmt(m.peakAfterSignature)}` +
                (m.rate ? `, 1 client ${(m.rate / 1e6).toFixed(0)} MB/s` : "") +
                (m.metadataRps
                  ? `, {version}.json ${m.metadataRps.toFixed(0)} req/s, then ${fmt(m.afterWrk!)}`
                  : ""),
            );
          }
        }
      }
    }
    if (!values["no-nginx"]) {
      const n = await measureNginxMemory(fx, clients);
      rows.push({ run: i, proto: "https", repo: "nginx", ...n });
      // deno-lint-ignore no-console
      console.log(`run ${i} nginx: idle ${fmt(n.idle)}, peak ${fmt(n.peak)}`);
    }
  }
  // deno-lint-ignore no-console
  if (values.json) console.log(JSON.stringify(rows));
  return 0;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
