/**
 * The fleet rows of `deno task bench` (issue 13 "Bench"): Repoxy replicas as
 * real processes (`-P=serve`, TLS, HTTP/1.1 default) on one Ceph RGW bucket,
 * against nginx serving the same file and against the upstream direct.
 *
 * - Warm archive from the local tier: replica A (which fetched it) vs nginx
 *   over A's `packages/`, 1 client, curl default negotiation, rounds
 *   interleaved (the order flips each round).
 *   The same against Repoxy without `storage` (disk only, the laptop's
 *   mode) on a's cache dir: what the local tier costs over plain disk.
 * - Warm archive from the bucket: replica B, whose `maxCacheSize` is below
 *   the archive, so every request streams from the bucket (nothing kept on
 *   its disk; checked), vs nginx, interleaved likewise.
 * - Cold miss, total time: a fleet replica vs curl straight from the
 *   bandwidth-limited upstream (bench/upstream.ts), a new platform per trial,
 *   alternating which goes first; the upload to the bucket is waited out
 *   between trials, untimed.
 * - Fleet-wide upstream fetches: N curl clients at once spread round-robin
 *   over M replicas (as a balancer does) on a cold archive: upstream archive
 *   fetches counted at the upstream, and the time until every client has
 *   every byte, vs the same N clients at once straight from the upstream
 *   (which paces each response, so N direct fetches run side by side).
 *
 * Run by bench/run.ts ({@link fleetBench}) or alone:
 *
 *   deno run -P=bench bench/fleet.ts [--quick | --smoke]
 *
 * Uses the RGW of `tests/run.ts` when REPOXY_TEST_RGW_FILE names it; otherwise
 * starts one (about 20 s), except in the smoke run, which then skips.
 * @module
 */
import { parseArgs } from "../lib/deps/cli.ts";
import { join, resolve } from "../lib/deps/path.ts";
import { dirname, fromFileUrl } from "../lib/deps/path.ts";
import { makeTestTls } from "../tests/_tls.ts";
import {
  cannotStart,
  listBucket,
  newBucket,
  RGW_ENV,
  type RgwEndpoint,
  type RunningRgw,
  startRgw,
} from "../tests/_rgw_cluster.ts";
import { startNginx } from "./nginx.ts";
import {
  type Child,
  curlGet,
  type CurlResult,
  freePort,
  median,
  spawnLogged,
  waitForHttp,
} from "./tools.ts";
import { startBenchUpstream, type UpstreamArchive } from "./upstream.ts";
import { writeStoredZip } from "./zipgen.ts";

const REPO = resolve(dirname(fromFileUrl(import.meta.url)), "..");
const HOST = "registry.terraform.io";
const NS = "fleet";
const MB = 1_000_000;

/** One row, in bench/run.ts's table shape. */
export interface FleetRow {
  measure: string;
  repoxy: string;
  baseline: string;
  ratio: string;
  range: string;
  target: string;
  met: "yes" | "NO" | "-";
}

interface FleetProfile {
  size: number;
  coldSize: number;
  bandwidth: number;
  latencyMs: number;
  reps: number;
  coldTrials: number;
  /** [replicas, clients] */
  shapes: Array<[number, number]>;
}

const PROFILES: Record<"full" | "quick" | "smoke", FleetProfile> = {
  full: {
    size: 100 * MB,
    coldSize: 10 * MB,
    bandwidth: 50 * MB,
    latencyMs: 20,
    reps: 7,
    coldTrials: 3,
    shapes: [[1, 8], [3, 8], [3, 24]],
  },
  quick: {
    size: 20 * MB,
    coldSize: 5 * MB,
    bandwidth: 50 * MB,
    latencyMs: 20,
    reps: 3,
    coldTrials: 2,
    shapes: [[1, 8], [3, 8], [3, 24]],
  },
  smoke: {
    size: 1 * MB,
    coldSize: 200_000,
    bandwidth: 20 * MB,
    latencyMs: 5,
    reps: 1,
    coldTrials: 1,
    shapes: [[3, 4]],
  },
};

const PLATFORMS = ["linux_amd64", "linux_arm64", "darwin_amd64", "darwin_arm64", "windows_amd64"];
const fmtRate = (bps: number) => `${(bps / MB).toFixed(0)} MB/s`;
const fmtS = (s: number) => `${s.toFixed(2)} s`;
const fmtSize = (b: number) =>
  b >= MB ? `${(b / MB).toFixed(0)} MB` : `${(b / 1000).toFixed(0)} kB`;
const spread = (xs: number[]) =>
  xs.length > 1 ? `${Math.min(...xs).toFixed(2)}–${Math.max(...xs).toFixed(2)}` : "-";

/** The RGW to use, one started here (stop it), or why there is none. */
async function resolveRgw(
  smoke: boolean,
): Promise<{ rgw: RgwEndpoint; started?: RunningRgw } | { skip: string }> {
  const file = Deno.env.get(RGW_ENV);
  if (file) {
    // tests/run.ts writes it once the cluster is up (or could not start).
    for (let i = 0; i < 600; i++) {
      const text = await Deno.readTextFile(file).catch(() => "");
      if (text.trim()) {
        const doc = JSON.parse(text) as { ready?: RgwEndpoint; unavailable?: string };
        return doc.ready ? { rgw: doc.ready } : { skip: doc.unavailable ?? "no RGW" };
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    return { skip: "tests/run.ts did not report its RGW cluster" };
  }
  if (smoke) return { skip: "the smoke run only uses the RGW of tests/run.ts" };
  const why = await cannotStart();
  if (why) return { skip: why };
  try {
    const started = await startRgw();
    return { rgw: started, started };
  } catch (e) {
    return { skip: `the RGW cluster did not start: ${(e as Error).message.split("\n")[0]}` };
  }
}

async function sha256File(path: string): Promise<string> {
  const { createHash } = await import("../lib/deps/crypto.ts");
  const h = createHash("sha256");
  using f = await Deno.open(path, { read: true });
  for await (const chunk of f.readable) h.update(chunk);
  return h.digest("hex");
}

/** What {@link fleetBench} measured, for the JSON output. */
export interface FleetRaw {
  local: { repoxy: number[]; nginx: number[] };
  /** Repoxy on disk only, same file, same rounds (the laptop's code path). */
  disk: number[];
  bucket: { repoxy: number[]; nginx: number[] };
  cold: { repoxy: number[]; direct: number[] };
  shapes: Array<{
    replicas: number;
    clients: number;
    fetches: number;
    seconds: number;
    /** The slowest client's curl total on each replica, in seconds. */
    slowestPerReplica: number[];
  }>;
  /** Seconds until every client of a shape had the archive straight from the upstream. */
  directAll: number[];
}

/**
 * Runs the fleet rows; `{ skip }` when no RGW is available (the caller prints
 * one SKIP line). Throws when a download is wrong (status, size) or the
 * bucket replica kept the archive on its disk.
 */
export async function fleetBench(
  opts: { profile: "full" | "quick" | "smoke"; log: (s: string) => void },
): Promise<{ rows: FleetRow[]; raw: FleetRaw } | { skip: string }> {
  const p = PROFILES[opts.profile];
  const got = await resolveRgw(opts.profile === "smoke");
  if ("skip" in got) return got;
  const { rgw, started } = got;
  const work = await Deno.makeTempDir({ prefix: "repoxy-bench-fleet-" });
  // nginx workers may run as another user: they must reach the files.
  await Deno.chmod(work, 0o755);
  const children: Child[] = [];
  try {
    const tls = await makeTestTls(join(work, "tls"));
    const files = join(work, "files");
    await Deno.mkdir(files, { recursive: true });
    // The warm archive (several platforms, one file), and the cold ones.
    const warmPath = join(files, "warm.zip");
    const size = await writeStoredZip(warmPath, "terraform-provider-warm_v1.0.0", p.size, 7);
    const warm: UpstreamArchive[] = [];
    const warmSha = await sha256File(warmPath);
    const archive = (path: string, sha256: string, size: number, pl: string) => {
      const [os, arch] = pl.split("_") as [string, string];
      return { os, arch, path, sha256, size };
    };
    for (const pl of PLATFORMS.slice(0, 1 + p.coldTrials)) {
      warm.push(archive(warmPath, warmSha, size, pl));
    }
    const coldPath = join(files, "cold.zip");
    const coldSize = await writeStoredZip(
      coldPath,
      "terraform-provider-cold_v1.0.0",
      p.coldSize,
      11,
    );
    const coldSha = await sha256File(coldPath);
    const coldVersions = p.shapes.map((_, i) => ({
      version: `1.${i}.0`,
      archives: [archive(coldPath, coldSha, coldSize, "linux_amd64")],
    }));
    await using upstream = await startBenchUpstream({
      providers: [
        { namespace: NS, type: "warm", versions: [{ version: "1.0.0", archives: warm }] },
        { namespace: NS, type: "cold", versions: coldVersions },
      ],
      bandwidth: p.bandwidth,
      latencyMs: p.latencyMs,
    });
    const bucket = await newBucket(rgw);

    // --- replicas: a, c, d are the fleet; b reads through from the bucket;
    // e is Repoxy on disk only (no storage section), over a's cache dir --------
    const names = ["a", "b", "c", "d", "e"] as const;
    const ports = names.map(() => freePort());
    const urls = ports.map((port) => `https://127.0.0.1:${port}`);
    for (const [i, n] of names.entries()) {
      const home = join(work, n);
      await Deno.mkdir(home, { recursive: true, mode: 0o755 });
      const config = join(home, "repoxy.json");
      await Deno.writeTextFile(
        config,
        JSON.stringify({
          listen: `127.0.0.1:${ports[i]}`,
          tls: { cert: tls.certPath, key: tls.keyPath },
          cacheDir: join(work, n === "e" ? "a" : n, "cache"),
          upstreams: { [HOST]: { url: upstream.url } },
          // Below the archive: every request streams from the bucket.
          ...(n === "b" ? { maxCacheSize: Math.floor(p.coldSize / 2) } : {}),
          ...(n === "e" ? {} : {
            storage: {
              kind: "s3",
              endpoint: rgw.endpoint,
              bucket,
              prefix: "m",
              credentials: {
                accessKeyId: rgw.accessKeyId,
                secretAccessKey: rgw.secretAccessKey,
              },
            },
          }),
        }),
      );
      children.push(spawnLogged(
        Deno.execPath(),
        ["run", "-P=serve", "main.ts", "serve", "--config", config],
        join(home, "repoxy.log"),
        { cwd: REPO },
      ));
    }
    for (const u of urls) await waitForHttp(`${u}/-/healthz`, 60_000, tls.caCertPem);
    const [a, b, c, d, e] = urls as [string, string, string, string, string];
    const fleet = [a, c, d];
    const curlTls = { cacert: tls.caCertPath };
    const zip = (type: string, v: string, pl: string) =>
      `${HOST}/${NS}/${type}/terraform-provider-${type}_${v}_${pl}.zip`;
    const check = (what: string, r: CurlResult, size?: number) => {
      if (r.code !== 200 || (size !== undefined && r.bytes !== size)) {
        throw new Error(`${what}: ${JSON.stringify(r)} (want 200, ${size} bytes)`);
      }
      return r;
    };
    const inBucket = async (key: string) =>
      (await listBucket(rgw, bucket, `m/packages/${key}`)).length === 1;
    const untilInBucket = async (key: string) => {
      for (let i = 0; i < 1200 && !(await inBucket(key)); i++) {
        await new Promise((r) => setTimeout(r, 50));
      }
      if (!(await inBucket(key))) throw new Error(`${key} never reached the bucket`);
    };

    // --- cold misses vs direct ---------------------------------------------------
    opts.log(`fleet: cold misses (${fmtSize(p.size)}) vs direct`);
    const raw: FleetRaw = {
      local: { repoxy: [], nginx: [] },
      disk: [],
      bucket: { repoxy: [], nginx: [] },
      cold: { repoxy: [], direct: [] },
      shapes: [],
      directAll: [],
    };
    const warmZip = zip("warm", "1.0.0", PLATFORMS[0]!);
    for (const [i, pl] of PLATFORMS.slice(0, 1 + p.coldTrials).entries()) {
      const key = zip("warm", "1.0.0", pl);
      const direct = () =>
        curlGet(`${upstream.url}/files/${NS}/warm/1.0.0/terraform-provider-warm_1.0.0_${pl}.zip`);
      const viaFleet = () => curlGet(`${a}/${key}`, curlTls);
      // The metadata first, untimed: the row is about the archive.
      check("metadata", await curlGet(`${a}/${HOST}/${NS}/warm/1.0.0.json`, curlTls));
      const order = i % 2 ? [direct, viaFleet] : [viaFleet, direct];
      for (const f of order) {
        const r = check(`cold ${pl}`, await f(), size);
        (f === direct ? raw.cold.direct : raw.cold.repoxy).push(r.total);
      }
      await untilInBucket(key);
    }

    // --- warm: local tier and bucket vs nginx ------------------------------------
    const nPort = freePort();
    const nginx = await startNginx({
      dir: join(work, "nginx"),
      port: nPort,
      certPath: tls.certPath,
      keyPath: tls.keyPath,
      archiveRoot: join(work, "a", "cache", "packages"),
      jsonRoot: join(work, "files"),
      workers: "auto",
    });
    children.push(nginx);
    const n = `https://127.0.0.1:${nPort}`;
    await waitForHttp(`${n}/`, 15_000, tls.caCertPem);
    opts.log(`fleet: warm archive, local tier and bucket vs nginx, ${p.reps} rounds`);
    // One untimed pass each (connections, page cache, JIT).
    for (const u of [a, b, e, n]) check("warm-up", await curlGet(`${u}/${warmZip}`, curlTls), size);
    for (let i = 0; i < p.reps; i++) {
      const round: Array<[string, number[]]> = [
        [a, raw.local.repoxy],
        [n, raw.local.nginx],
        [e, raw.disk],
        [b, raw.bucket.repoxy],
        [n, raw.bucket.nginx],
      ];
      for (const [u, into] of i % 2 ? round.reverse() : round) {
        const r = check(`warm ${u}`, await curlGet(`${u}/${warmZip}`, curlTls), size);
        into.push(r.bytes / r.total);
      }
    }
    const bDisk = join(work, "b", "cache", "packages", warmZip);
    if (await Deno.stat(bDisk).then(() => true, () => false)) {
      throw new Error("replica b kept the archive on its disk: the bucket row would be a disk row");
    }

    // --- fleet-wide upstream fetches under concurrency ---------------------------
    for (const [s, [replicas, clients]] of p.shapes.entries()) {
      opts.log(`fleet: ${clients} cold clients over ${replicas} replicas`);
      const v = `1.${s}.0`;
      const path = zip("cold", v, "linux_amd64");
      const targets = fleet.slice(0, replicas);
      // Every replica has the metadata first (untimed): the row is about the archive.
      for (const u of targets) {
        check("metadata", await curlGet(`${u}/${HOST}/${NS}/cold/${v}.json`, curlTls));
      }
      // The same clients straight from the upstream, all at once: N fetches.
      const t1 = performance.now();
      const direct = await Promise.all(
        Array.from({ length: clients }, () =>
          curlGet(
            `${upstream.url}/files/${NS}/cold/${v}/terraform-provider-cold_${v}_linux_amd64.zip`,
          )),
      );
      for (const r of direct) check("direct", r, coldSize);
      raw.directAll.push((performance.now() - t1) / 1000);
      const before = upstream.stats.archive ?? 0;
      const t0 = performance.now();
      const results = await Promise.all(
        Array.from(
          { length: clients },
          (_, k) => curlGet(`${targets[k % replicas]}/${path}`, curlTls),
        ),
      );
      const seconds = (performance.now() - t0) / 1000;
      for (const r of results) check(`${clients} × ${replicas}`, r, coldSize);
      raw.shapes.push({
        replicas,
        clients,
        fetches: (upstream.stats.archive ?? 0) - before,
        seconds,
        // Which replica held the lease shows here: its clients finish first.
        slowestPerReplica: targets.map((_, j) =>
          Math.max(...results.filter((_, k) => k % replicas === j).map((r) => r.total))
        ),
      });
      await untilInBucket(path);
    }

    // --- rows ----------------------------------------------------------------------
    const ratioRow = (measure: string, r: number[], x: number[]): FleetRow => {
      const per = r.map((v, i) => v / x[i]!);
      return {
        measure,
        repoxy: fmtRate(median(r)),
        baseline: fmtRate(median(x)),
        ratio: (median(r) / median(x)).toFixed(2),
        range: spread(per),
        target: "-",
        met: "-",
      };
    };
    const rows: FleetRow[] = [
      ratioRow(
        `Fleet on S3: warm archive from the local tier, ${
          fmtSize(p.size)
        }, 1 client, curl default (vs nginx HTTP/1.1 sendfile)`,
        raw.local.repoxy,
        raw.local.nginx,
      ),
      ratioRow(
        `Fleet on S3: warm archive from the local tier, ${
          fmtSize(p.size)
        }, 1 client, curl default (vs the same file from Repoxy on disk only)`,
        raw.local.repoxy,
        raw.disk,
      ),
      ratioRow(
        `Fleet on S3: warm archive from the bucket (not on the replica's disk), ${
          fmtSize(p.size)
        }, 1 client, curl default (vs nginx from disk)`,
        raw.bucket.repoxy,
        raw.bucket.nginx,
      ),
    ];
    const rc = median(raw.cold.repoxy);
    const dc = median(raw.cold.direct);
    rows.push({
      measure: `Fleet on S3: cold miss, total time, ${fmtSize(p.size)} at ${
        fmtRate(p.bandwidth)
      } (vs direct)`,
      repoxy: fmtS(rc),
      baseline: fmtS(dc),
      ratio: (rc / dc).toFixed(2),
      range: spread(raw.cold.repoxy.map((v, i) => v / raw.cold.direct[i]!)),
      target: "-",
      met: "-",
    });
    for (const [i, s] of raw.shapes.entries()) {
      rows.push({
        measure: `Fleet on S3: ${s.clients} cold clients × ${s.replicas} replicas, ${
          fmtSize(p.coldSize)
        }: upstream fetches, time until all done (vs the same clients direct)`,
        repoxy: `${s.fetches} fetch${s.fetches === 1 ? "" : "es"}, ${fmtS(s.seconds)}`,
        baseline: `${s.clients} fetches, ${fmtS(raw.directAll[i]!)}`,
        ratio: (s.seconds / raw.directAll[i]!).toFixed(2),
        range: `slowest client per replica: ${
          s.slowestPerReplica.map((x) => x.toFixed(2)).join(", ")
        } s`,
        target: "1 fetch",
        met: s.fetches === 1 ? "yes" : "NO",
      });
    }
    return { rows, raw };
  } finally {
    await Promise.all(children.map((ch) => ch.stop()));
    await Deno.remove(work, { recursive: true }).catch(() => {});
    await started?.stop();
  }
}

if (import.meta.main) {
  const args = parseArgs({
    args: Deno.args,
    options: { quick: { type: "boolean" }, smoke: { type: "boolean" } },
  });
  const profile = args.values.smoke ? "smoke" : args.values.quick ? "quick" : "full";
  // deno-lint-ignore no-console
  const log = (s: string) => console.error(`bench: ${s}`);
  const r = await fleetBench({ profile, log });
  // deno-lint-ignore no-console
  const out = (s: string) => console.log(s);
  if ("skip" in r) out(`SKIP: fleet rows: ${r.skip}`);
  else {
    out("| Measure | Repoxy | nginx / direct | Ratio | Per-round range | Target | Met |");
    out("|---|---:|---:|---:|---:|---|---|");
    for (const x of r.rows) {
      out(
        `| ${x.measure} | ${x.repoxy} | ${x.baseline} | ${x.ratio} | ${x.range} | ${x.target} | ${x.met} |`,
      );
    }
  }
}
