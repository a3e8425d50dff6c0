/**
 * Fleet leases (issue 13 point 3) on a real Ceph RGW: what one upstream
 * fetch per archive costs and saves. Replicas are app instances in this
 * process on one cache dir, coordinating through the bucket's
 * `S3Storage.coordination()`; the upstream is the fake registry, with an
 * optional delay before each archive (`--delay MS`, a slow upstream).
 *
 * For each shape (replicas × concurrent clients per archive), without and
 * with leases: the median time until every client has the whole archive
 * (metadata fetched beforehand, not timed), upstream archive fetches per
 * archive, and coordination requests per archive.
 *
 *   deno run -A bench/fleet_lease.ts [--delay 200] [--archives 12]
 *
 * Uses the RGW of `tests/run.ts` when REPOXY_TEST_RGW_FILE names it, or
 * starts one (about 20 s) and stops it at the end.
 * @module
 */
import { parseArgs } from "../lib/deps/cli.ts";
import type { CoordinationStore } from "../lib/cache/coordination.ts";
import { makeTestApp, tempDir, type TestApp } from "../tests/_helpers.ts";
import { startFakeRegistry } from "../tests/fake_registry.ts";
import { newBucket, RGW_ENV, type RgwEndpoint, startRgw } from "../tests/_rgw_cluster.ts";
import { rgwCoordination } from "../tests/_rgw_coordination.ts";

const { values: args } = parseArgs({
  args: Deno.args,
  options: { delay: { type: "string" }, archives: { type: "string" } },
});
const DELAY = Number(args.delay ?? "0");
const N = Number(args.archives ?? "12");
const H = "registry.terraform.io";

const stateFile = Deno.env.get(RGW_ENV);
const started = stateFile ? undefined : await startRgw();
const rgw: RgwEndpoint = started ??
  (JSON.parse(await Deno.readTextFile(stateFile!)) as { ready: RgwEndpoint }).ready;

const versions = Array.from({ length: N }, (_, i) => ({
  version: `1.${i}.0`,
  platforms: ["linux_amd64"],
}));
const fake = await startFakeRegistry({
  providers: [{ namespace: "example", type: "alpha", versions }],
  redirectDownloads: false,
  intercept: async (req, server) => {
    if (server === "release" && new URL(req.url).pathname.endsWith(".zip") && DELAY) {
      await new Promise((r) => setTimeout(r, DELAY));
    }
    return undefined;
  },
});

/** A store that counts the requests it passes on. */
function counted(s: CoordinationStore, n: { calls: number }): CoordinationStore {
  return {
    create: (k, b) => (n.calls++, s.create(k, b)),
    replace: (k, b, e) => (n.calls++, s.replace(k, b, e)),
    read: (k) => (n.calls++, s.read(k)),
    remove: (k, e) => (n.calls++, s.remove(k, e)),
  };
}

async function shape(leases: boolean, replicas: number, clients: number) {
  await using dir = await tempDir();
  const bucket = await newBucket(rgw);
  const calls = { calls: 0 };
  const apps: TestApp[] = [];
  for (let i = 0; i < replicas; i++) {
    const fleet = { store: counted(rgwCoordination(rgw, bucket), calls), replica: `r${i}` };
    apps.push(await makeTestApp(fake, dir.path, {}, leases ? { fleet } : {}));
  }
  const zips = () => fake.count((r) => r.path.endsWith(".zip"));
  const before = zips();
  const times: number[] = [];
  try {
    for (let v = 0; v < N; v++) {
      const a = fake.archive("alpha", `1.${v}.0`, "linux_amd64");
      await Promise.all(apps.map(async (t) => {
        await (await t.get(`/${H}/example/alpha/1.${v}.0.json`)).arrayBuffer();
      }));
      const t0 = performance.now();
      await Promise.all(Array.from({ length: clients }, async (_, i) => {
        const r = await apps[i % replicas]!.get(`/${H}/example/alpha/${a.filename}`);
        if (r.status !== 200) throw new Error(`status ${r.status}`);
        await r.arrayBuffer();
      }));
      times.push(performance.now() - t0);
    }
    for (const t of apps) await t.app.settle();
  } finally {
    for (const t of apps) await t[Symbol.asyncDispose]();
  }
  times.sort((x, y) => x - y);
  return {
    ms: times[times.length >> 1]!,
    fetches: (zips() - before) / N,
    calls: calls.calls / N,
  };
}

const rows: string[] = [
  `Fleet leases on RGW, upstream delay ${DELAY} ms, ${N} archives per shape`,
  "",
  "| replicas × clients | leases | median ms (all clients done) | upstream fetches / archive | coordination requests / archive |",
  "|---|---|---|---|---|",
];
try {
  for (const [replicas, clients] of [[1, 1], [3, 3], [3, 8]] as const) {
    for (const leases of [false, true]) {
      const r = await shape(leases, replicas, clients);
      rows.push(
        `| ${replicas} × ${clients} | ${leases ? "yes" : "no"} | ${
          r.ms.toFixed(1)
        } | ${r.fetches} | ${r.calls.toFixed(1)} |`,
      );
    }
  }
} finally {
  await fake.stop();
  await started?.stop();
}
// deno-lint-ignore no-console
console.log(rows.join("\n"));
