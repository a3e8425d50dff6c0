/**
 * Fleet leases against a real Ceph RGW (issue 13 point 3): its conditional
 * writes, ETags, `Last-Modified` and `Date` are the only coordinator.
 * Replicas are {@link FleetLeases} instances (and, for the archive path,
 * app instances on one cache dir) each with its own S3 client.
 * @module
 */
import { assert, assertEquals } from "../lib/deps/assert.ts";
import { memoryLogger } from "../lib/base/log.ts";
import { type Acquired, FleetLeases, leaseKey } from "../lib/cache/fleet_lease.ts";
import { listBucket, newBucket, rgw, skipUnlessRgw } from "./_rgw.ts";
import { type RgwCoordination, rgwCoordination } from "./_rgw_coordination.ts";
import { startFakeRegistry } from "./fake_registry.ts";
import { makeTestApp, sha256Hex, tempDir, type TestApp, TWO_PROVIDERS } from "./_helpers.ts";

const ignore = skipUnlessRgw("fleet leases on RGW");
const H = "registry.terraform.io";
const KEY = "packages/h/ns/t/terraform-provider-t_1.0.0_linux_amd64.zip";
/** The shortest TTL (RGW's Last-Modified has one-second precision). */
const TTL = 3_000;

function replica(store: RgwCoordination, name: string, renewMs?: number): FleetLeases {
  return new FleetLeases(
    { store, replica: name, ttlMs: TTL, pollMinMs: 20, pollMaxMs: 100, maxWaitMs: 60_000, renewMs },
    memoryLogger(),
  );
}

Deno.test({
  name:
    "RGW: 8 replicas race for one archive: exactly one holds the lease, the other 7 serve its commit",
  ignore,
  async fn() {
    const bucket = await newBucket(rgw!);
    let committed = false;
    const results = await Promise.all(
      Array.from({ length: 8 }, async (_, i) => {
        const got = await replica(rgwCoordination(rgw!, bucket), `r${i}`).acquire(KEY, {
          committed: () => Promise.resolve(committed ? "stored" : undefined),
          progress: () => ({ written: 0, size: undefined }),
        });
        if (got.kind === "held") {
          // The one fetch: the others are waiting on the lease meanwhile.
          await new Promise((r) => setTimeout(r, 300));
          committed = true;
          await got.lease.release();
        }
        return got.kind;
      }),
    );
    assertEquals(results.filter((k) => k === "held").length, 1);
    assertEquals(results.filter((k) => k === "committed").length, 7);
    assertEquals(await listBucket(rgw!, bucket, "leases/"), [], "the lease was deleted");
  },
});

Deno.test({
  name:
    "RGW: a holder that stops renewing goes stale by RGW's clock, exactly one of three takes over, and the old holder's release leaves the taker's lease alone",
  ignore,
  async fn() {
    const bucket = await newBucket(rgw!);
    const holderStore = rgwCoordination(rgw!, bucket);
    // Its renewals fail from here (a paused or killed process) ...
    let paused = false;
    const pausable: RgwCoordination = {
      ...holderStore,
      replace: (k, b, e) =>
        paused ? Promise.reject(new Error("paused")) : holderStore.replace(k, b, e),
    };
    const holder = await replica(pausable, "old", 500).acquire(KEY, {
      committed: () => Promise.resolve(undefined),
      progress: () => ({ written: 1, size: 10 }),
    });
    if (holder.kind !== "held") throw new Error(`holder got ${holder.kind}`);
    paused = true;
    let committed = false;
    const taken: Array<Acquired<string>> = [];
    let release!: () => void;
    const taker = new Promise<void>((r) => release = r);
    const waiters = ["b", "c", "d"].map(async (n) => {
      const leases = replica(rgwCoordination(rgw!, bucket), n);
      const got = await leases.acquire(KEY, {
        committed: () => Promise.resolve(committed ? "stored" : undefined),
        progress: () => ({ written: 0, size: undefined }),
      });
      if (got.kind === "held") {
        taken.push(got);
        await taker;
        committed = true;
        await got.lease.release();
      }
      return {
        kind: got.kind,
        takenOver: leases.stats.takenOver,
        why: got.kind === "unleased" ? got.why : "",
      };
    });
    const until = Date.now() + 15_000;
    while (taken.length === 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
    assertEquals(taken.length, 1, "a waiter took the stale lease over");
    // ... and it wakes up and releases: RGW deletes whatever If-Match says,
    // so only the final conditional renewal keeps the taker's lease alive.
    paused = false;
    await holder.lease.release();
    assert(holder.lease.lost, "the old holder learned it lost the lease");
    assertEquals(
      (await listBucket(rgw!, bucket, "leases/")).map((o) => o.key),
      [leaseKey(KEY)],
      "the taker's lease survived",
    );
    release();
    const out = await Promise.all(waiters);
    assertEquals(out.filter((o) => o.kind === "held").length, 1);
    assertEquals(out.reduce((n, o) => n + o.takenOver, 0), 1, "exactly one taker");
    assertEquals(out.filter((o) => o.kind === "committed").length, 2, JSON.stringify(out));
    assertEquals(await listBucket(rgw!, bucket, "leases/"), []);
  },
});

Deno.test({
  name:
    "RGW: 8 concurrent cold clients over 3 replicas coordinating through RGW: one upstream fetch per archive, verified bytes for all",
  ignore,
  async fn() {
    let open!: () => void;
    const hold = new Promise<void>((r) => open = r);
    await using fake = await startFakeRegistry({
      providers: TWO_PROVIDERS,
      redirectDownloads: false,
      intercept: async (req, server) => {
        if (server === "release" && new URL(req.url).pathname.endsWith(".zip")) await hold;
        return undefined;
      },
    });
    await using dir = await tempDir();
    const bucket = await newBucket(rgw!);
    const apps: TestApp[] = [];
    try {
      for (const n of ["A", "B", "C"]) {
        apps.push(
          await makeTestApp(fake, dir.path, {}, {
            fleet: { store: rgwCoordination(rgw!, bucket), replica: n, pollMinMs: 20 },
          }),
        );
      }
      const a = fake.archive("alpha", "1.0.0", "linux_amd64");
      const results = Array.from({ length: 8 }, async (_, i) => {
        const res = await apps[i % 3]!.get(`/${H}/example/alpha/${a.filename}`);
        return { status: res.status, sha: sha256Hex(new Uint8Array(await res.arrayBuffer())) };
      });
      const until = Date.now() + 15_000;
      while (
        !apps.every((t) => t.app.downloads.count === 1) ||
        (await listBucket(rgw!, bucket, "leases/")).length === 0
      ) {
        if (Date.now() > until) throw new Error("the replicas did not all reach the lease");
        await new Promise((r) => setTimeout(r, 20));
      }
      open();
      for (const r of results) assertEquals(await r, { status: 200, sha: sha256Hex(a.bytes) });
      assertEquals(
        fake.count((r) => r.server === "release" && r.path.endsWith(".zip")),
        1,
        "one upstream fetch",
      );
      const s = apps.map((t) => t.app.downloads.opts.fleet!.stats);
      assertEquals(s.reduce((n, x) => n + x.created, 0), 1);
      assertEquals(s.reduce((n, x) => n + x.waitedForCommit, 0), 2);
      // The holder deletes its lease after the commit the others served.
      for (const t of apps) await t.app.settle();
      assertEquals(await listBucket(rgw!, bucket, "leases/"), []);
    } finally {
      open();
      for (const t of apps) await t[Symbol.asyncDispose]();
    }
  },
});
