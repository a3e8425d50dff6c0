/**
 * The test cluster's mechanics (no side effect on import; tests/_rgw.ts
 * decides whether and when to use them). A real S3 server for the tests: Ceph's RADOS Gateway on a single-node
 * cluster on 127.0.0.1 (one monitor, one OSD on a memory store, `auth = none`,
 * pool size 1, beast frontend), started once per test run.
 *
 * `deno task test` runs tests/run.ts, which starts the cluster beside
 * `deno test` and writes what it got into the file named by
 * {@link RGW_ENV} (`{"ready": {...}}` or `{"unavailable": "reason"}`); the
 * test modules (in several workers) wait for that file here. A test file run
 * alone, without that variable, starts a cluster of its own for its process,
 * stopped by PID when the process ends (an `unload` handler, and a watchdog
 * shell that outlives a crash).
 *
 * When the cluster cannot start (packages missing, not root), {@link rgw} is
 * undefined and {@link rgwSkipReason} says why: tests register with
 * `ignore: true` and print one `SKIP:` line ({@link skipUnlessRgw}).
 * @module
 */
import { AwsClient } from "../lib/deps/aws4fetch.ts";
import { dirname, join } from "../lib/deps/path.ts";

/** Environment variable naming the file tests/run.ts writes the cluster's state into. */
export const RGW_ENV = "REPOXY_TEST_RGW_FILE";

/** Where the S3 API of the test cluster is, and the credentials of its one user. */
export interface RgwEndpoint {
  /** `http://127.0.0.1:<port>` */
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  region: string;
  /** The cluster's ceph.conf, for starting extra gateways ({@link startGateway}). */
  conf: string;
}

/** A running cluster this process started. */
export interface RunningRgw extends RgwEndpoint {
  /** Seconds from spawn to a gateway answering. */
  startSeconds: number;
  /** Stops every daemon by PID and removes the cluster's folder. */
  stop(): Promise<void>;
}

const ACCESS_KEY = "repoxytest";
const SECRET_KEY = "repoxytestsecret";
const BINARIES = ["ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "ceph", "monmaptool"];

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

async function which(bin: string): Promise<boolean> {
  for (const dir of (Deno.env.get("PATH") ?? "/usr/bin:/bin").split(":")) {
    try {
      if ((await Deno.stat(join(dir, bin))).isFile) return true;
    } catch { /* next */ }
  }
  return false;
}

/** Why a cluster cannot be started here, or undefined when it can be tried. */
export async function cannotStart(): Promise<string | undefined> {
  if (Deno.build.os !== "linux") return "RGW tests need Linux";
  if (Deno.uid() !== 0) return "RGW tests need root (ceph daemons)";
  const missing: string[] = [];
  for (const b of BINARIES) if (!(await which(b))) missing.push(b);
  if (missing.length) {
    return `ceph is not installed (${
      missing.join(", ")
    } missing; apt-get install radosgw ceph-mon ceph-osd)`;
  }
  return undefined;
}

async function run(cmd: string, args: string[], what: string): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped", stdin: "null" })
    .output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    throw new Error(`${what} failed (${out.code}): ${new TextDecoder().decode(out.stderr).trim()}`);
  }
  return text;
}

async function pidsIn(dir: string): Promise<number[]> {
  const pids: number[] = [];
  try {
    for await (const e of Deno.readDir(dir)) {
      if (!e.name.endsWith(".pid")) continue;
      const n = Number((await Deno.readTextFile(join(dir, e.name)).catch(() => "")).trim());
      if (Number.isInteger(n) && n > 1) pids.push(n);
    }
  } catch { /* no folder */ }
  return pids;
}

function alive(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

/** Stops processes by PID: TERM, then KILL after 3 s. */
export async function stopPids(pids: number[]): Promise<void> {
  for (const p of pids) {
    try {
      Deno.kill(p, "SIGTERM");
    } catch { /* gone */ }
  }
  const until = Date.now() + 3_000;
  while (pids.some(alive) && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
  for (const p of pids.filter(alive)) {
    try {
      Deno.kill(p, "SIGKILL");
    } catch { /* gone */ }
  }
}

async function waitFor(what: string, ms: number, ok: () => Promise<boolean>): Promise<void> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (await ok().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} did not come up within ${ms / 1000} s`);
}

async function gatewayUp(endpoint: string): Promise<boolean> {
  const r = await fetch(endpoint, { signal: AbortSignal.timeout(1_000) });
  await r.body?.cancel();
  return r.status < 500;
}

/**
 * {@link startRgwOnce}, tried a second time in a fresh folder when the first
 * attempt fails: on a loaded machine the monitor sometimes refuses its first
 * commands ("EPERM: problem getting command descriptions from mon"), and a
 * cluster that did not start turns every RGW test into a SKIP.
 */
export async function startRgw(): Promise<RunningRgw> {
  try {
    return await startRgwOnce();
  } catch (first) {
    try {
      return await startRgwOnce();
    } catch (second) {
      throw new Error(
        `${(second as Error).message} (first attempt: ${(first as Error).message.split("\n")[0]})`,
      );
    }
  }
}

/**
 * Starts a single-node cluster with one gateway in a fresh temp folder.
 * Throws with the failing step when it cannot.
 */
async function startRgwOnce(): Promise<RunningRgw> {
  const t0 = performance.now();
  const dir = await Deno.makeTempDir({ prefix: "repoxy-rgw-" });
  const runDir = join(dir, "run");
  const stop = async () => {
    await stopPids(await pidsIn(runDir));
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  try {
    for (const d of ["mon", "osd", "run", "rgw"]) await Deno.mkdir(join(dir, d));
    const [monPort, rgwPort] = [freePort(), freePort()];
    const fsid = crypto.randomUUID();
    const conf = join(dir, "ceph.conf");
    await Deno.writeTextFile(
      conf,
      `[global]
fsid = ${fsid}
mon host = v1:127.0.0.1:${monPort}
mon initial members = a
auth cluster required = none
auth service required = none
auth client required = none
auth supported = none
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
mon allow pool size one = true
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
osd crush update on start = false
osd class update on start = false
osd objectstore = memstore
memstore device bytes = 1073741824
public addr = 127.0.0.1
ms bind ipv6 = false
run dir = ${runDir}
log file = ${dir}/$name.log
admin socket = ${runDir}/$name.asok
pid file = ${runDir}/$name.pid
keyring = ${dir}/keyring
[mon.a]
mon data = ${dir}/mon
[osd.0]
osd data = ${dir}/osd
[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:${rgwPort}
rgw data = ${dir}/rgw
rgw dns name = localhost
`,
    );
    const c = ["-c", conf];
    await run("monmaptool", [
      "--create",
      "--add",
      "a",
      `v1:127.0.0.1:${monPort}`,
      "--fsid",
      fsid,
      join(dir, "monmap"),
    ], "monmaptool");
    await run(
      "ceph-mon",
      [...c, "--mkfs", "-i", "a", "--monmap", join(dir, "monmap")],
      "ceph-mon --mkfs",
    );
    await run("ceph-mon", [...c, "-i", "a"], "ceph-mon");
    // Killed by PID whatever happens next: this process may die at any point.
    startWatchdog(runDir, dir);
    const osdUuid = crypto.randomUUID();
    await run("ceph", [...c, "osd", "new", osdUuid, "0"], "ceph osd new");
    await run("ceph-osd", [...c, "-i", "0", "--mkfs", "--osd-uuid", osdUuid], "ceph-osd --mkfs");
    await run(
      "ceph",
      [...c, "osd", "crush", "add", "osd.0", "1", "root=default"],
      "ceph osd crush add",
    );
    await run("ceph-osd", [...c, "-i", "0"], "ceph-osd");
    await waitFor(
      "the OSD",
      30_000,
      async () => (await run("ceph", [...c, "osd", "stat"], "ceph osd stat")).includes("1 up"),
    );
    await run("radosgw-admin", [
      ...c,
      "user",
      "create",
      "--uid=repoxy",
      "--display-name=repoxy",
      `--access-key=${ACCESS_KEY}`,
      `--secret=${SECRET_KEY}`,
    ], "radosgw-admin user create");
    await run("radosgw", [...c, "-n", "client.rgw"], "radosgw");
    const endpoint = `http://127.0.0.1:${rgwPort}`;
    await waitFor("radosgw", 30_000, () => gatewayUp(endpoint));
    const started = {
      endpoint,
      accessKeyId: ACCESS_KEY,
      secretAccessKey: SECRET_KEY,
      region: "us-east-1",
      conf,
    };
    // The first bucket creates the gateway's data pools (seconds): paid here,
    // once, not by whichever test comes first.
    const warm = await newBucket(started);
    const put = await rgwClient(started).fetch(`${endpoint}/${warm}/warm`, {
      method: "PUT",
      body: "warm",
    });
    await put.body?.cancel();
    return {
      endpoint,
      accessKeyId: ACCESS_KEY,
      secretAccessKey: SECRET_KEY,
      region: "us-east-1",
      conf,
      startSeconds: (performance.now() - t0) / 1000,
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}

/**
 * A shell that waits for this process to end, then stops the daemons by the
 * PIDs in their pid files and removes the folder: a crashed or killed test
 * run leaves no cluster behind.
 */
function startWatchdog(runDir: string, dir: string): void {
  const script = `while kill -0 ${Deno.pid} 2>/dev/null; do sleep 1; done
for f in "${runDir}"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; done
sleep 3
for f in "${runDir}"/*.pid; do [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null; done
rm -rf "${dir}"`;
  const child = new Deno.Command("bash", {
    args: ["-c", script],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  child.unref();
}

/** A second gateway on a running cluster, to stop on purpose (a bucket outage). */
export interface Gateway {
  endpoint: string;
  /** Stops this gateway by its PID (the cluster and its other gateways go on). */
  stop(): Promise<void>;
  /** Starts it again on the same port (the bucket comes back). */
  restart(): Promise<void>;
}

/**
 * Starts one more radosgw on the cluster of `rgw`, on a port of its own. Its
 * pid file lives in the cluster's run folder, so whoever stops the cluster
 * (or its watchdog) stops this gateway too.
 */
export async function startGateway(rgw: RgwEndpoint): Promise<Gateway> {
  const port = freePort();
  const name = `client.rgw${port}`;
  const runDir = join(dirname(rgw.conf), "run");
  const dir = await Deno.makeTempDir({ prefix: "repoxy-rgw-gw-" });
  const pidFile = join(runDir, `gw-${port}.pid`);
  const endpoint = `http://127.0.0.1:${port}`;
  let running = false;
  const start = async () => {
    await run("radosgw", [
      "-c",
      rgw.conf,
      "-n",
      name,
      `--rgw-frontends=beast endpoint=127.0.0.1:${port}`,
      `--pid-file=${pidFile}`,
      `--admin-socket=${join(dir, "gw.asok")}`,
      `--log-file=${join(dir, "gw.log")}`,
      `--rgw-data=${dir}`,
    ], "radosgw (extra gateway)");
    running = true;
    await waitFor("extra radosgw", 30_000, () => gatewayUp(endpoint));
  };
  const stop = async () => {
    if (!running) return;
    running = false;
    const pid = Number((await Deno.readTextFile(pidFile).catch(() => "")).trim());
    if (pid > 1) await stopPids([pid]);
    await Deno.remove(pidFile).catch(() => {});
  };
  await start();
  return {
    endpoint,
    async stop() {
      await stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
    async restart() {
      await stop();
      await start();
    },
  };
}

/** A signing client for the test user (test setup and inspection only). */
export function rgwClient(rgw: RgwEndpoint): AwsClient {
  return new AwsClient({
    accessKeyId: rgw.accessKeyId,
    secretAccessKey: rgw.secretAccessKey,
    service: "s3",
    region: rgw.region,
  });
}

let bucketSeq = 0;

/** Creates a fresh, empty bucket for one test and returns its name. */
export async function newBucket(rgw: RgwEndpoint): Promise<string> {
  const name = `t-${Deno.pid}-${Date.now().toString(36)}-${++bucketSeq}`;
  const r = await rgwClient(rgw).fetch(`${rgw.endpoint}/${name}`, { method: "PUT" });
  const text = await r.text();
  if (r.status !== 200) throw new Error(`cannot create bucket ${name}: ${r.status} ${text}`);
  return name;
}

/** Every key in `bucket` under `prefix` with its size (ListObjectsV2, all pages). */
export async function listBucket(
  rgw: RgwEndpoint,
  bucket: string,
  prefix = "",
): Promise<Array<{ key: string; size: number }>> {
  const out: Array<{ key: string; size: number }> = [];
  let token: string | undefined;
  for (;;) {
    const u = new URL(`${rgw.endpoint}/${bucket}`);
    u.searchParams.set("list-type", "2");
    u.searchParams.set("prefix", prefix);
    if (token) u.searchParams.set("continuation-token", token);
    const r = await rgwClient(rgw).fetch(u);
    const xml = await r.text();
    if (r.status !== 200) throw new Error(`list ${bucket}: ${r.status} ${xml}`);
    for (const m of xml.matchAll(/<Contents>([\s\S]*?)<\/Contents>/g)) {
      const key = /<Key>([^<]*)<\/Key>/.exec(m[1]!)![1]!;
      const size = Number(/<Size>(\d+)<\/Size>/.exec(m[1]!)![1]);
      out.push({ key: key.replaceAll("&amp;", "&"), size });
    }
    token = /<NextContinuationToken>([^<]*)</.exec(xml)?.[1];
    if (!token) return out;
  }
}

/** Multipart uploads in progress in `bucket` (their keys). */
export async function listUploads(rgw: RgwEndpoint, bucket: string): Promise<string[]> {
  const r = await rgwClient(rgw).fetch(`${rgw.endpoint}/${bucket}?uploads`);
  const xml = await r.text();
  if (r.status !== 200) throw new Error(`list uploads ${bucket}: ${r.status} ${xml}`);
  return [...xml.matchAll(/<Upload>[\s\S]*?<Key>([^<]*)<\/Key>/g)].map((m) => m[1]!);
}
