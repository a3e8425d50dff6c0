/**
 * Issue 13 point 3: one upstream fetch per archive across replicas, with the
 * object store's conditional writes as the only coordinator. Replicas are
 * app instances on one cache dir (the shared storage) and one in-memory
 * store with S3's semantics and a clock the test moves
 * ({@link FakeCoordinationStore}); the upstream is the fake registry.
 * @module
 */
import { assert, assertEquals } from "../lib/deps/assert.ts";
import { memoryLogger } from "../lib/base/log.ts";
import { FleetLeases, leaseKey } from "../lib/cache/fleet_lease.ts";
import type { FleetTuning } from "../lib/cache/fleet_lease.ts";
import { FakeCoordinationStore } from "./fake_coordination.ts";
import { type FakeRegistry, startFakeRegistry } from "./fake_registry.ts";
import { makeTestApp, sha256Hex, tempDir, type TestApp, TWO_PROVIDERS } from "./_helpers.ts";

const H = "registry.terraform.io";
/** Polls fast, so a test's waits are short; the TTL is the shortest allowed. */
const FAST: FleetTuning = { ttlMs: 3_000, pollMinMs: 5, pollMaxMs: 40, maxWaitMs: 60_000 };

/** Archive bodies the release host sent (not redirects, not metadata). */
function zipGets(fake: FakeRegistry, filename?: string): number {
  return fake.count((r) =>
    r.server === "release" && r.path.endsWith(filename ?? ".zip") && r.method === "GET"
  );
}

/** Resolves when `cond` holds (checked every 5 ms), or fails after 10 s. */
async function until(cond: () => boolean, what: string): Promise<void> {
  const end = Date.now() + 10_000;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** A manually opened gate. */
function gate(): { wait: Promise<void>; open: () => void } {
  let open!: () => void;
  const wait = new Promise<void>((r) => open = r);
  return { wait, open };
}

/**
 * The fake registry of {@link TWO_PROVIDERS} (archives served directly) whose
 * first `hung` archive fetches wait for `release` and then answer 503: a
 * holder that is stuck, or about to die.
 */
function hangingArchives(release: Promise<void>, hung: number): Promise<FakeRegistry> {
  let n = 0;
  return startFakeRegistry({
    providers: TWO_PROVIDERS,
    redirectDownloads: false,
    intercept: async (req, server) => {
      if (server !== "release" || !new URL(req.url).pathname.endsWith(".zip")) return undefined;
      if (n++ >= hung) return undefined;
      await release;
      return new Response("late", { status: 503 });
    },
  });
}

/** Three replicas on one cache dir and one coordination store. */
async function fleet(
  fake: FakeRegistry,
  dir: string,
  store: FakeCoordinationStore,
  tuning: FleetTuning = FAST,
  names = ["A", "B", "C"],
): Promise<TestApp[]> {
  const apps: TestApp[] = [];
  for (const n of names) {
    apps.push(
      await makeTestApp(fake, dir, {}, {
        fleet: { ...tuning, store: store.client(n), replica: n },
      }),
    );
  }
  return apps;
}

async function closeAll(apps: TestApp[]): Promise<void> {
  for (const a of apps) await a[Symbol.asyncDispose]();
}

/** Status and sha256 of a whole answer (errors read as their body's text). */
async function fetchResult(p: Promise<Response>): Promise<{ status: number; sha: string }> {
  const res = await p;
  const bytes = new Uint8Array(await res.arrayBuffer());
  return { status: res.status, sha: sha256Hex(bytes) };
}

function stats(apps: TestApp[]) {
  const all = apps.map((a) => a.app.downloads.opts.fleet!.stats);
  const sum = (k: keyof (typeof all)[0]) => all.reduce((n, s) => n + s[k], 0);
  return {
    created: sum("created"),
    takenOver: sum("takenOver"),
    waited: sum("waitedForCommit"),
    unleased: sum("unleased"),
  };
}

Deno.test("8 concurrent cold requests over 3 replicas: exactly 1 upstream fetch per archive, every client gets the verified bytes", async () => {
  const hold = gate();
  await using fake = await startFakeRegistry({
    providers: TWO_PROVIDERS,
    redirectDownloads: false,
    // The archives wait until every client asked: the race is real.
    intercept: async (req, server) => {
      if (server === "release" && new URL(req.url).pathname.endsWith(".zip")) await hold.wait;
      return undefined;
    },
  });
  await using dir = await tempDir();
  const store = new FakeCoordinationStore();
  const apps = await fleet(fake, dir.path, store);
  try {
    const a = fake.archive("alpha", "1.0.0", "linux_amd64");
    const b = fake.archive("beta", "2.3.4", "darwin_arm64");
    const urlOf = (x: typeof a) => `/${H}/example/${x.type}/${x.filename}`;
    const clients: Array<{ want: typeof a; got: Promise<{ status: number; sha: string }> }> = [];
    for (let i = 0; i < 8; i++) {
      for (const want of [a, b]) {
        clients.push({ want, got: fetchResult(apps[i % 3]!.get(urlOf(want))) });
      }
    }
    // Every replica has a download of each archive, waiting on the lease or the upstream.
    await until(
      () => apps.every((t) => t.app.downloads.count === 2) && store.refused.create >= 4,
      "every replica to reach the lease",
    );
    hold.open();
    for (const c of clients) {
      assertEquals(await c.got, { status: 200, sha: sha256Hex(c.want.bytes) });
    }
    assertEquals(zipGets(fake, a.filename), 1, "one upstream fetch of alpha");
    assertEquals(zipGets(fake, b.filename), 1, "one upstream fetch of beta");
    const s = stats(apps);
    assertEquals(s.created, 2, "one lease per archive");
    assertEquals(s.waited, 4, "the other two replicas served each archive from the commit");
    assertEquals(s.unleased + s.takenOver, 0);
    // Leases are gone once committed; the archives are not fetched again.
    await until(() => store.objects.size === 0, "the leases to be deleted");
    assertEquals(store.count("remove"), store.count("create"), "every lease created was deleted");
    const again = await apps[1]!.get(urlOf(a));
    assertEquals(again.headers.get("x-repoxy-cache"), "hit");
    assertEquals(sha256Hex(new Uint8Array(await again.arrayBuffer())), sha256Hex(a.bytes));
    assertEquals(zipGets(fake), 2);
  } finally {
    hold.open();
    await closeAll(apps);
  }
});

Deno.test("a holder that dies mid-download: after the TTL by the store's clock exactly one replica takes over and completes; nothing partial is ever stored", async () => {
  const first = gate();
  // The first fetch of the archive hangs (its holder is about to die).
  await using fake = await hangingArchives(first.wait, 1);
  await using dir = await tempDir();
  const store = new FakeCoordinationStore();
  const clients = new Map<string, ReturnType<FakeCoordinationStore["client"]>>();
  const apps: TestApp[] = [];
  for (const name of ["A", "B", "C"]) {
    const c = store.client(name);
    clients.set(name, c);
    apps.push(
      await makeTestApp(fake, dir.path, {}, { fleet: { ...FAST, store: c, replica: name } }),
    );
  }
  try {
    const a = fake.archive("alpha", "1.1.0", "windows_amd64");
    const url = `/${H}/example/alpha/${a.filename}`;
    const holderClient = fetchResult(apps[0]!.get(url));
    await until(() => zipGets(fake) === 1, "the holder's upstream request");
    const waiting = [1, 1, 2, 2].map((i) => fetchResult(apps[i]!.get(url)));
    await until(() => store.refused.create >= 2, "both other replicas to find the lease");
    // The holder renews on its own (every ttl/5, by real time)...
    await until(() => store.count("replace", "A") >= 1, "a renewal");
    clients.get("A")!.crash(); // ...until it is killed.
    // Fresh by the store's clock: nobody takes over, nobody fetches.
    await new Promise((r) => setTimeout(r, 200));
    assertEquals(stats(apps).takenOver, 0);
    assertEquals(zipGets(fake), 1);
    assertEquals(
      await apps[1]!.app.cache.storage.stat(apps[1]!.app.packages.keyOf(
        { hostname: H, namespace: "example", type: "alpha" },
        "1.1.0",
        { os: "windows", arch: "amd64" },
      )),
      undefined,
      "no partial archive is visible",
    );
    store.advance(FAST.ttlMs! + 1_000);
    for (const w of waiting) assertEquals(await w, { status: 200, sha: sha256Hex(a.bytes) });
    assertEquals(stats(apps).takenOver, 1, "exactly one taker");
    assertEquals(zipGets(fake), 2, "the dead holder's fetch and the taker's");
    assertEquals(stats(apps).waited, 1, "the other replica served the taker's commit");
    first.open();
    assertEquals((await holderClient).status, 502, "the dead holder's own client failed");
  } finally {
    first.open();
    await closeAll(apps);
  }
});

Deno.test("lease staleness is judged by the store's clock, never a replica's", async () => {
  await using fake = await startFakeRegistry({
    providers: TWO_PROVIDERS,
    redirectDownloads: false,
  });
  await using dir = await tempDir();
  const store = new FakeCoordinationStore();
  // The store is an hour behind the replicas' clocks (and the replica's
  // own clock is skewed a day the other way): by any replica clock the
  // lease below is an hour old.
  store.clock = Date.now() - 3_600_000;
  const a = fake.archive("beta", "2.3.4", "linux_arm64");
  const pkg = `packages/${H}/example/beta/${a.filename}`;
  const skewed = store.client("Z");
  assert(
    (await skewed.create(
      leaseKey(pkg),
      new TextEncoder().encode(
        JSON.stringify({ v: 1, owner: "Z", seq: 0, written: 0, size: null, at: Date.now() + 1e8 }),
      ),
    )) !== "exists",
  );
  const [b] = await fleet(fake, dir.path, store, FAST, ["B"]);
  try {
    const got = fetchResult(b!.get(`/${H}/example/beta/${a.filename}`));
    await new Promise((r) => setTimeout(r, 300));
    assertEquals(zipGets(fake), 0, "a lease fresh by the store's clock is waited for");
    assertEquals(stats([b!]).takenOver, 0);
    store.advance(FAST.ttlMs! + 1_000);
    assertEquals(await got, { status: 200, sha: sha256Hex(a.bytes) });
    assertEquals(stats([b!]).takenOver, 1, "stale by the store's clock: taken over");
    assertEquals(zipGets(fake), 1);
  } finally {
    await closeAll([b!]);
  }
});

Deno.test("the holder's upstream fails: the waiters do not wait out their budget, each replica tries once and its clients get a clear 502", async () => {
  await using fake = await startFakeRegistry({
    providers: TWO_PROVIDERS,
    redirectDownloads: false,
    intercept: (req, server) =>
      server === "release" && new URL(req.url).pathname.endsWith(".zip")
        ? new Response("nope", { status: 404 })
        : undefined,
  });
  await using dir = await tempDir();
  const store = new FakeCoordinationStore();
  // A budget longer than the test takes: the waiters must learn of the
  // failure, not wait it out (which "unleased" would count).
  const apps = await fleet(fake, dir.path, store, { ...FAST, maxWaitMs: 20_000 });
  try {
    const a = fake.archive("alpha", "1.0.0", "darwin_arm64");
    const url = `/${H}/example/alpha/${a.filename}`;
    const results = await Promise.all(
      [0, 1, 2, 0, 1, 2, 1, 2].map(async (i) => {
        const res = await apps[i]!.get(url);
        return { status: res.status, body: await res.text() };
      }),
    );
    for (const r of results) {
      assertEquals(r.status, 502);
      assert(r.body.includes("answered 404"), r.body);
    }
    const s = stats(apps);
    assertEquals(s.unleased, 0, "nobody waited out the budget");
    assertEquals(s.created, 3, "each replica took its turn once");
    assertEquals(zipGets(fake), 3);
    assertEquals(store.objects.size, 0, "every failed holder deleted its lease");
  } finally {
    await closeAll(apps);
  }
});

Deno.test("a holder alive but stuck: the waiters fetch the archive themselves once their wait budget is spent", async () => {
  const stuck = gate();
  await using fake = await hangingArchives(stuck.wait, 1);
  await using dir = await tempDir();
  const store = new FakeCoordinationStore();
  const apps = await fleet(fake, dir.path, store, { ...FAST, maxWaitMs: 300 });
  try {
    const a = fake.archive("alpha", "1.0.0", "windows_amd64");
    const url = `/${H}/example/alpha/${a.filename}`;
    const holder = fetchResult(apps[0]!.get(url));
    await until(() => zipGets(fake) === 1, "the holder's upstream request");
    const waiting = [1, 2, 1, 2].map((i) => fetchResult(apps[i]!.get(url)));
    for (const w of waiting) assertEquals(await w, { status: 200, sha: sha256Hex(a.bytes) });
    const s = stats(apps);
    assert(
      s.unleased >= 1 && s.unleased <= 2,
      `one or two replicas fetched unleased: ${s.unleased}`,
    );
    assertEquals(zipGets(fake), 1 + s.unleased, "the stuck holder's and each impatient replica's");
    assertEquals(s.takenOver, 0, "the holder kept renewing: its lease was never taken");
    stuck.open();
    assertEquals((await holder).status, 502);
  } finally {
    stuck.open();
    await closeAll(apps);
  }
});

Deno.test("lease objects: renewals always change the ETag, a holder taken over never deletes the taker's lease, a commit seen after winning fetches nothing", async () => {
  const store = new FakeCoordinationStore();
  const log = memoryLogger();
  const mk = (name: string) =>
    new FleetLeases({ ...FAST, renewMs: 20, store: store.client(name), replica: name }, log);
  const A = mk("A");
  const B = mk("B");
  const key = "packages/h/ns/t/terraform-provider-t_1.0.0_linux_amd64.zip";
  // Progress that never moves: the bodies must still differ (S3 ETags are content hashes).
  const still = () => ({ written: 5, size: 10 });
  const a = await A.acquire(key, { committed: () => Promise.resolve(undefined), progress: still });
  assertEquals(a.kind, "held");
  const etags = new Set<string>();
  await until(() => {
    etags.add(store.objects.get(leaseKey(key))!.etag);
    return store.count("replace", "A") >= 3;
  }, "three renewals");
  assert(etags.size >= 3, `renewals kept changing the ETag (${etags.size})`);
  if (a.kind !== "held") throw new Error("unreachable");
  await a.lease.release();
  assertEquals(store.objects.size, 0, "released: deleted");
  // A slow holder (renewing every ttl/3) is judged dead in between: B takes over.
  const slow = new FleetLeases({ ...FAST, renewMs: 1_000, store: store.client("S") }, log);
  const s = await slow.acquire(key, {
    committed: () => Promise.resolve(undefined),
    progress: still,
  });
  if (s.kind !== "held") throw new Error(`slow holder got ${s.kind}`);
  store.advance(FAST.ttlMs! + 1_000);
  const b = await B.acquire(key, { committed: () => Promise.resolve(undefined), progress: still });
  if (b.kind !== "held") throw new Error(`taker got ${b.kind}`);
  assertEquals(B.stats.takenOver, 1);
  await until(() => s.lease.lost, "the slow holder to learn it lost the lease");
  await s.lease.release();
  assert(store.objects.has(leaseKey(key)), "the old holder did not delete the taker's lease");
  await b.lease.release();
  // Taken over with no renewal in between: the old holder's release must
  // not delete the taker's lease, though the store's DELETE ignores If-Match.
  const s2 = await slow.acquire(key, {
    committed: () => Promise.resolve(undefined),
    progress: still,
  });
  if (s2.kind !== "held") throw new Error(`slow holder got ${s2.kind}`);
  store.advance(FAST.ttlMs! + 1_000);
  const b2 = await B.acquire(key, { committed: () => Promise.resolve(undefined), progress: still });
  if (b2.kind !== "held") throw new Error(`taker got ${b2.kind}`);
  await s2.lease.release();
  assert(s2.lease.lost, "the release found the lease taken");
  assert(store.objects.has(leaseKey(key)), "the taker's lease survived the old holder's release");
  await b2.lease.release();
  assertEquals(store.objects.size, 0);
  // Winning the create but finding the archive committed (the last holder
  // committed and deleted its lease in between): nothing to fetch, lease gone.
  const c = await A.acquire(key, { committed: () => Promise.resolve("meta"), progress: still });
  assertEquals(c, { kind: "committed", meta: "meta" });
  assertEquals(store.objects.size, 0);
});

Deno.test("no coordination store (local disk): no leases, no extra work", async () => {
  await using dir = await tempDir();
  await using t = await makeTestApp(undefined, dir.path);
  assertEquals(t.app.downloads.opts.fleet, undefined);
});

Deno.test("a holder whose own rate says it cannot finish within the wait budget: the waiter fetches at once, not at the end of the budget", async () => {
  const stop = new AbortController();
  let n = 0;
  await using fake = await startFakeRegistry({
    providers: TWO_PROVIDERS,
    redirectDownloads: false,
    // Big enough that a trickle outlasts any wait budget of this test.
    zipOverride: (name, zip) =>
      name.includes("beta_2.3.4_linux_amd64")
        ? new Uint8Array([...zip, ...new Uint8Array(3000)])
        : zip,
    // The first fetch trickles (announced size, 1 byte per 40 ms).
    intercept: (req, server) => {
      if (server !== "release" || !new URL(req.url).pathname.endsWith(".zip")) return undefined;
      if (n++ > 0) return undefined;
      const bytes = fake.archive("beta", "2.3.4", "linux_amd64").bytes;
      let at = 0;
      const body = new ReadableStream<Uint8Array>({
        async pull(c) {
          await new Promise<void>((r) => {
            const t = setTimeout(r, 40);
            stop.signal.addEventListener("abort", () => (clearTimeout(t), r()), { once: true });
          });
          if (stop.signal.aborted) return c.close();
          c.enqueue(bytes.slice(at, at + 1));
          if (++at === bytes.length) c.close();
        },
      });
      return new Response(body, { headers: { "content-length": String(bytes.length) } });
    },
  });
  await using dir = await tempDir();
  const store = new FakeCoordinationStore();
  // The budget is far longer than the test; the trickle would need minutes.
  const apps = await fleet(fake, dir.path, store, { ...FAST, renewMs: 100, maxWaitMs: 60_000 }, [
    "A",
    "B",
  ]);
  try {
    const a = fake.archive("beta", "2.3.4", "linux_amd64");
    assert(a.bytes.length * 40 > 60_000, `the trickle outlasts the budget (${a.bytes.length} B)`);
    const url = `/${H}/example/beta/${a.filename}`;
    const holder = apps[0]!.get(url);
    await until(() => zipGets(fake) === 1, "the holder's upstream request");
    assertEquals(await fetchResult(apps[1]!.get(url)), { status: 200, sha: sha256Hex(a.bytes) });
    assertEquals(stats(apps).unleased, 1);
    assert(
      apps[1]!.log.records.some((r) =>
        r.msg === "fetching the archive without a fleet lease" &&
        String(r.reason ?? "").includes("past the wait budget")
      ),
      "the waiter said why",
    );
    stop.abort();
    await (await holder).body?.cancel().catch(() => {});
  } finally {
    stop.abort();
    await closeAll(apps);
  }
});

Deno.test("the coordination store unreachable: each replica fetches and serves by itself", async () => {
  await using fake = await startFakeRegistry({
    providers: TWO_PROVIDERS,
    redirectDownloads: false,
  });
  await using dir = await tempDir();
  const down = new FakeCoordinationStore().client("A");
  down.crash();
  await using t = await makeTestApp(fake, dir.path, {}, { fleet: { ...FAST, store: down } });
  const a = fake.archive("alpha", "1.0.0", "linux_amd64");
  const got = await fetchResult(t.get(`/${H}/example/alpha/${a.filename}`));
  assertEquals(got, { status: 200, sha: sha256Hex(a.bytes) });
  assertEquals(t.app.downloads.opts.fleet!.stats.unleased, 1);
  assertEquals(zipGets(fake), 1);
});

Deno.test("store errors while waiting (RGW answers a lost race with 500) are looked at again, not taken for an outage", async () => {
  const store = new FakeCoordinationStore();
  const log = memoryLogger();
  const mk = (name: string) =>
    new FleetLeases({ ...FAST, store: store.client(name), replica: name }, log);
  const key = "packages/h/ns/t/terraform-provider-t_1.0.0_linux_amd64.zip";
  const still = () => ({ written: 0, size: undefined });
  let committed = false;
  const a = await mk("A").acquire(key, {
    committed: () => Promise.resolve(undefined),
    progress: still,
  });
  if (a.kind !== "held") throw new Error(a.kind);
  const B = mk("B");
  const b = B.acquire(key, {
    committed: () => Promise.resolve(committed ? "meta" : undefined),
    progress: still,
  });
  await until(() => store.refused.create === 1, "B to find the lease");
  store.failNext = 2;
  await until(() => store.failNext === 0, "two failed calls");
  committed = true;
  await a.lease.release();
  assertEquals(await b, { kind: "committed", meta: "meta" });
  assertEquals(B.stats.unleased, 0);
  // Three in a row is an outage: the replica fetches by itself.
  const C = mk("C");
  const a2 = await mk("A2").acquire(key + "2", {
    committed: () => Promise.resolve(undefined),
    progress: still,
  });
  if (a2.kind !== "held") throw new Error(a2.kind);
  store.failNext = 3;
  const c = await C.acquire(key + "2", {
    committed: () => Promise.resolve(undefined),
    progress: still,
  });
  assertEquals(c.kind, "unleased");
  await a2.lease.release();
});

Deno.test("a waiting replica shutting down stops waiting at once: its client gets an error, its close does not wait out the budget", async () => {
  const stuck = gate();
  await using fake = await hangingArchives(stuck.wait, Infinity);
  await using dir = await tempDir();
  const store = new FakeCoordinationStore();
  // A budget longer than the test takes: only the shutdown may end the wait.
  const [a, b] = await fleet(fake, dir.path, store, { ...FAST, maxWaitMs: 5_000 }, ["A", "B"]);
  try {
    const x = fake.archive("alpha", "1.1.0", "linux_amd64");
    const url = `/${H}/example/alpha/${x.filename}`;
    const holder = fetchResult(a!.get(url));
    await until(() => zipGets(fake) === 1, "the holder's upstream request");
    const waiter = fetchResult(b!.get(url));
    await until(() => store.refused.create === 1, "B waiting on the lease");
    await b![Symbol.asyncDispose]();
    assert((await waiter).status >= 500, "the waiter's client got an error");
    assertEquals(b!.app.downloads.opts.fleet!.stats.unleased, 0, "it did not fetch by itself");
    assertEquals(zipGets(fake), 1);
    stuck.open();
    assertEquals((await holder).status, 502);
  } finally {
    stuck.open();
    await closeAll([a!]);
  }
});

Deno.test("a holder that will store nothing (a pass-through) gives its lease up at once: another replica fetches and stores meanwhile", async () => {
  const hold = gate();
  let n = 0;
  await using fake = await startFakeRegistry({
    providers: TWO_PROVIDERS,
    redirectDownloads: false,
    // The first fetch sends half, then stalls until the end of the test.
    intercept: (req, server) => {
      if (server !== "release" || !new URL(req.url).pathname.endsWith(".zip")) return undefined;
      if (n++ > 0) return undefined;
      const bytes = fake.archive("beta", "2.3.4", "darwin_arm64").bytes;
      let sent = false;
      return new Response(
        new ReadableStream<Uint8Array>({
          async pull(c) {
            if (sent) {
              await hold.wait;
              return c.close();
            }
            sent = true;
            c.enqueue(bytes.slice(0, bytes.length >> 1));
          },
        }),
        { headers: { "content-length": String(bytes.length) } },
      );
    },
  });
  await using dir = await tempDir();
  const store = new FakeCoordinationStore();
  // A's quota is smaller than the archive: it passes it through, storing nothing.
  const a = await makeTestApp(fake, dir.path, { maxCacheSize: "100B" }, {
    fleet: { ...FAST, store: store.client("A"), replica: "A" },
  });
  // B's budget is longer than the test takes: it must not be what ends the wait.
  const [b] = await fleet(fake, dir.path, store, { ...FAST, maxWaitMs: 5_000 }, ["B"]);
  try {
    const x = fake.archive("beta", "2.3.4", "darwin_arm64");
    const url = `/${H}/example/beta/${x.filename}`;
    const first = await a.get(url);
    assertEquals(first.headers.get("x-repoxy-cache"), "bypass");
    // B does not wait for A's (stalled) transfer: it takes the free lease.
    assertEquals(await fetchResult(b!.get(url)), { status: 200, sha: sha256Hex(x.bytes) });
    assertEquals(b!.app.downloads.opts.fleet!.stats.created, 1);
    assertEquals(b!.app.downloads.opts.fleet!.stats.unleased, 0);
    assertEquals(zipGets(fake), 2);
    hold.open();
    await first.body?.cancel().catch(() => {});
  } finally {
    hold.open();
    await closeAll([a, b!]);
  }
});
