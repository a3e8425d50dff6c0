/**
 * Processes sharing one cache dir (issue 10, rows 9, 10 and 13): each owns a
 * locked temp folder that nobody else removes, a cache dir emptied while
 * running recovers at the next write, `warm` reports only what is stored, a
 * failed commit leaves no record, and the inventory behind the metrics
 * shrinks when this or another process prunes.
 * @module
 */
import { assert, assertEquals, assertMatch } from "../lib/deps/assert.ts";
import { join } from "../lib/deps/path.ts";
import { openCacheDir } from "../lib/cache/cache_dir.ts";
import { pruneCache } from "../lib/cache/quota.ts";
import { memoryLogger } from "../lib/base/log.ts";
import { type ArchiveMeta } from "../lib/cache/archive_meta.ts";
import { runCli, writeFakeConfig } from "./_cli.ts";
import { spawnRepoxy } from "./_process.ts";
import { gate } from "./_slow.ts";
import { startFakeRegistry } from "./fake_registry.ts";
import {
  bytesOf,
  exists,
  makeTestApp,
  mirrorFixture,
  sha256Hex,
  tempDir,
  tempLeftovers,
  TWO_PROVIDERS,
} from "./_helpers.ts";

const H = "registry.terraform.io";
const MAIN = new URL("../main.ts", import.meta.url).pathname;

/** The value of an unlabelled metric in Prometheus text. */
async function metric(res: Response, name: string): Promise<number> {
  const text = await res.text();
  const line = text.split("\n").find((l) => l.startsWith(name + " "));
  assert(line, `${name} in /-/metrics`);
  return Number(line.slice(name.length + 1));
}

Deno.test("start-up keeps the temp files of a live process and removes only dead ones", async () => {
  await using dir = await tempDir();
  // Another live process (a command) with a file in its own temp folder.
  await using other = await openCacheDir(dir.path, memoryLogger());
  const working = other.storage.tempPath("terraform-provider-x.zip");
  await Deno.writeTextFile(working, "half a download");
  // A dead process: its lock file is not held by anyone.
  await Deno.mkdir(join(dir.path, "tmp", "999999-deadbeef"));
  await Deno.writeTextFile(join(dir.path, "tmp", "999999-deadbeef", "x.tmp"), "old");
  await Deno.writeTextFile(join(dir.path, "tmp", "999999-deadbeef.lock"), "999999\n");
  // A planted "lock" that is a link: removed, its target never opened or touched.
  await using outside = await tempDir();
  await Deno.writeTextFile(join(outside.path, "target"), "keep me");
  await Deno.symlink(join(outside.path, "target"), join(dir.path, "tmp", "888888-feed.lock"));
  // Pre-per-process-folder leftovers (no lock at all).
  await Deno.writeTextFile(join(dir.path, "tmp", "y.zip.tmp-1-2-3"), "old");

  {
    await using t = await makeTestApp(undefined, dir.path);
    assertEquals(await Deno.readTextFile(working), "half a download", "start-up left it alone");
    assertEquals(await exists(join(dir.path, "tmp", "999999-deadbeef")), false);
    assertEquals(await exists(join(dir.path, "tmp", "999999-deadbeef.lock")), false);
    assertEquals(await exists(join(dir.path, "tmp", "y.zip.tmp-1-2-3")), false);
    assertEquals(await exists(join(dir.path, "tmp", "888888-feed.lock")), false);
    assertEquals(await Deno.readTextFile(join(outside.path, "target")), "keep me");
    assert(t.log.records.some((r) => r.msg === "removed leftover temp files from an earlier run"));
    // The server's own folder, locked: the other process's sweep keeps it.
    const own = t.app.cache.storage.tempPath("mine");
    await Deno.writeTextFile(own, "server's");
    assertEquals(
      await tempLeftovers(dir.path),
      [
        own.slice(join(dir.path, "tmp").length + 1),
        working.slice(join(dir.path, "tmp").length + 1),
      ].sort(),
    );
  }
  // Shutdown removed the server's folder and nothing of the live command.
  assertEquals(await Deno.readTextFile(working), "half a download", "shutdown left it alone");
  assertEquals(await tempLeftovers(dir.path), [working.slice(join(dir.path, "tmp").length + 1)]);
  await other.close();
  assertEquals(await Array.fromAsync(Deno.readDir(join(dir.path, "tmp"))), []);
});

Deno.test("the cache dir emptied while running: caching resumes without a restart, one download per archive", async () => {
  await using t = await mirrorFixture({ providers: TWO_PROVIDERS });
  const zipGets = () => t.fake.count((r) => r.server === "release" && r.path.endsWith(".zip"));
  // A normal miss first, for the number of requests one download takes here.
  const a = t.fake.archive("alpha", "1.0.0", "linux_amd64");
  assertEquals(await bytesOf(await t.get(`/${H}/example/alpha/${a.filename}`)), a.bytes);
  await t.app.settle();
  const perDownload = zipGets();

  for (const e of await Array.fromAsync(Deno.readDir(t.dir.path))) {
    await Deno.remove(join(t.dir.path, e.name), { recursive: true });
  }

  const b = t.fake.archive("alpha", "1.0.0", "darwin_arm64");
  const before = zipGets();
  const res = await t.get(`/${H}/example/alpha/${b.filename}`);
  assertEquals(res.status, 200);
  assertEquals(sha256Hex(await bytesOf(res)), b.sha256);
  await t.app.settle();
  assertEquals(zipGets() - before, perDownload, "one upstream download for the archive");
  const stored = join(t.dir.path, "packages", H, "example", "alpha", b.filename);
  assertEquals(sha256Hex(await Deno.readFile(stored)), b.sha256, "it was cached again");
  const hit = await t.get(`/${H}/example/alpha/${b.filename}`);
  assertEquals(hit.headers.get("x-repoxy-cache"), "hit");
  assertEquals(sha256Hex(await bytesOf(hit)), b.sha256);
  assertEquals(zipGets() - before, perDownload);
  assertEquals(await tempLeftovers(t.dir.path), []);

  // Only tmp/ this time (lock files included).
  await Deno.remove(join(t.dir.path, "tmp"), { recursive: true });
  const c = t.fake.archive("beta", "2.3.4", "linux_amd64");
  const before2 = zipGets();
  assertEquals(sha256Hex(await bytesOf(await t.get(`/${H}/example/beta/${c.filename}`))), c.sha256);
  await t.app.settle();
  assertEquals(zipGets() - before2, perDownload);
  const storedC = join(t.dir.path, "packages", H, "example", "beta", c.filename);
  assertEquals(sha256Hex(await Deno.readFile(storedC)), c.sha256);
  // The temp folder came back with its lock held: another process's sweep keeps it.
  await using other = await openCacheDir(t.dir.path, memoryLogger());
  const mine = t.app.cache.storage.tempPath("probe");
  await Deno.writeTextFile(mine, "x");
  await other.close();
  assertEquals(await Deno.readTextFile(mine), "x");
  await Deno.remove(mine);
});

Deno.test("warm racing a server that starts and stops on the same cache stores what it reports", async () => {
  const hold = gate();
  let zipAsked!: () => void;
  const asked = new Promise<void>((r) => zipAsked = r);
  await using fake = await startFakeRegistry({
    providers: TWO_PROVIDERS,
    intercept: (req, server) => {
      const path = new URL(req.url).pathname;
      if (server !== "release" || !path.endsWith("alpha_1.0.0_linux_amd64.zip")) return undefined;
      const a = fake.archive("alpha", "1.0.0", "linux_amd64");
      zipAsked();
      let sent = 0;
      return new Response(
        new ReadableStream<Uint8Array>({
          async pull(c) {
            if (sent === 0) {
              c.enqueue(a.bytes.slice(0, 100));
              sent = 100;
              return;
            }
            await hold.wait; // the rest only once the server came and went
            c.enqueue(a.bytes.slice(sent));
            c.close();
          },
        }),
        { headers: { "content-length": String(a.bytes.length) } },
      );
    },
  });
  await using dir = await tempDir();
  const { cacheDir, config } = await writeFakeConfig(dir.path, fake);
  const a = fake.archive("alpha", "1.0.0", "linux_amd64");
  const warm = runCli(["warm", "-c", config, "-p", "linux_amd64", `${H}/example/alpha@1.0.0`]);
  await asked;
  // warm's half-written temp file is in its own folder now.
  const deadline = Date.now() + 20_000;
  while ((await tempLeftovers(cacheDir)).length === 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 20));
  }
  const warmFiles = await tempLeftovers(cacheDir);
  assertEquals(warmFiles.length, 1, "warm's temp file");

  const server = await spawnRepoxy(Deno.execPath(), [
    "run",
    "-P=serve",
    MAIN,
    "serve",
    "--config",
    config,
    "--listen",
    "127.0.0.1:0",
  ]);
  assertEquals(await fetch(server.url + "-/healthz").then((r) => r.body?.cancel()), undefined);
  const status = await server.stop("SIGTERM");
  assertEquals(status.code, 0, server.stderr.join("\n"));
  assertEquals(await tempLeftovers(cacheDir), warmFiles, "the server left warm's file alone");

  hold.open();
  const run = await warm;
  assertEquals(run.code, 0, run.stderr);
  assertMatch(run.stdout, /1 fetched/);
  assertMatch(run.stdout, /0 failed/);
  const stored = join(cacheDir, "packages", H, "example", "alpha", a.filename);
  assertEquals(sha256Hex(await Deno.readFile(stored)), a.sha256);
  const meta = JSON.parse(
    JSON.parse(
      await Deno.readTextFile(
        join(cacheDir, "refs", H, "example", "alpha", "1.0.0", "archive_linux_amd64.json"),
      ),
    ).body,
  ) as ArchiveMeta;
  assertEquals(meta.sha256, a.sha256);
  assertEquals(await Array.fromAsync(Deno.readDir(join(cacheDir, "tmp"))), []);
});

Deno.test("a commit whose rename fails leaves no record behind (and keeps an earlier one)", async () => {
  await using dir = await tempDir();
  await using cache = await openCacheDir(dir.path, memoryLogger());
  const p = { hostname: H, namespace: "example", type: "alpha" };
  const pl = { os: "linux", arch: "amd64" };
  const bytes = new TextEncoder().encode("zip bytes");
  const meta: ArchiveMeta = {
    sha256: sha256Hex(bytes),
    size: bytes.length,
    cachedAt: 1,
    url: "https://x/y.zip",
  };
  // A directory where the archive should go: the rename fails.
  const key = cache.packages.keyOf(p, "1.0.0", pl);
  await Deno.mkdir(join(cache.storage.pathOf(key), "blocker"), { recursive: true });
  const tmp = cache.storage.tempPath("a.zip");
  await Deno.writeFile(tmp, bytes);
  let failed = false;
  try {
    await cache.packages.commit(p, "1.0.0", pl, tmp, meta);
  } catch {
    failed = true;
  }
  assert(failed, "the commit failed");
  assertEquals(await cache.packages.readMeta(p, "1.0.0", pl), undefined, "no orphan record");
  assertEquals(await cache.packages.open(p, "1.0.0", pl), undefined);

  // With an earlier good archive in place, a failed replacement keeps its record.
  await Deno.remove(cache.storage.pathOf(key), { recursive: true });
  const tmp2 = cache.storage.tempPath("a.zip");
  await Deno.writeFile(tmp2, bytes);
  await cache.packages.commit(p, "1.0.0", pl, tmp2, meta);
  const tmp3 = cache.storage.tempPath("a.zip");
  await Deno.writeFile(tmp3, bytes);
  await Deno.remove(tmp3); // gone: this commit fails
  const other = { ...meta, cachedAt: 2, fp: "0".repeat(64) };
  await cache.packages.commit(p, "1.0.0", pl, tmp3, other).catch(() => {});
  const kept = await cache.packages.readMeta(p, "1.0.0", pl);
  assertEquals(kept?.cachedAt, 1);
  const open = await cache.packages.open(p, "1.0.0", pl);
  assert(open, "the earlier archive is still served");
  open.object.close();
});

Deno.test("metrics and the status page shrink when this process or another one prunes", async () => {
  await using fake = await startFakeRegistry({ providers: TWO_PROVIDERS });
  await using dir = await tempDir();
  const wanted = [
    fake.archive("alpha", "1.0.0", "linux_amd64"),
    fake.archive("alpha", "1.0.0", "darwin_arm64"),
    fake.archive("beta", "2.3.4", "linux_amd64"),
  ];
  const biggest = Math.max(...wanted.map((a) => a.bytes.length));
  // In-process: a quota that fits one archive.
  {
    await using t = await makeTestApp(fake, join(dir.path, "q"), {
      maxCacheSize: biggest,
      backgroundVerify: { rate: 0 },
    });
    for (const a of wanted) {
      await bytesOf(await t.get(`/${H}/example/${a.type}/${a.filename}`));
      await t.app.settle();
    }
    const onDisk = (await Array.fromAsync(
      Deno.readDir(join(dir.path, "q", "packages", H, "example", "alpha")),
    )).length + (await Array.fromAsync(
      Deno.readDir(join(dir.path, "q", "packages", H, "example", "beta")),
    )).length;
    assertEquals(onDisk, 1, "the quota kept one archive");
    assertEquals(await metric(await t.get("/-/metrics"), "repoxy_cache_archives"), 1);
    assertEquals(
      await metric(await t.get("/-/metrics"), "repoxy_cache_size_bytes"),
      wanted[2]!.bytes.length,
    );
  }

  // Another process prunes: the server learns it from the change marker.
  const cacheDir = join(dir.path, "shared");
  let wake!: () => void;
  let ticks = 0;
  await using t = await makeTestApp(fake, cacheDir, { backgroundVerify: { rate: 0 } }, {
    // The watch loop's waits, driven by the test.
    backgroundSleep: (_ms, signal) =>
      new Promise<void>((r) => {
        ticks++;
        wake = r;
        signal.addEventListener("abort", () => r(), { once: true });
      }),
  });
  for (const a of wanted) await bytesOf(await t.get(`/${H}/example/${a.type}/${a.filename}`));
  await t.app.settle();
  assertEquals(await metric(await t.get("/-/metrics"), "repoxy_cache_archives"), 3);
  const page = () => t.get("/", { headers: { accept: "text/html" } }).then((r) => r.text());
  assert((await page()).includes("example/alpha"), "the status page lists the archives");
  {
    await using other = await openCacheDir(cacheDir, memoryLogger());
    const r = await pruneCache(other, { maxBytes: 0 });
    assertEquals(r.evicted.length, 3);
  }
  // The server stores one more before it looks: its own mark must not hide
  // the other process's.
  const last = fake.archive("alpha", "1.0.0", "windows_amd64");
  await bytesOf(await t.get(`/${H}/example/alpha/${last.filename}`));
  await t.app.settle();
  const seen = ticks;
  wake();
  while (ticks === seen) await new Promise((r) => setTimeout(r, 5));
  assertEquals(await metric(await t.get("/-/metrics"), "repoxy_cache_archives"), 1);
  assertEquals(
    await metric(await t.get("/-/metrics"), "repoxy_cache_size_bytes"),
    last.bytes.length,
  );
  const after = await page();
  assert(!after.includes("example/beta"), "the status page no longer lists the pruned ones");
  assert(after.includes("windows_amd64") && !after.includes("darwin_arm64"));
});

Deno.test("warm counts an archive it could not store as failed and exits 1", async () => {
  await using fake = await startFakeRegistry({ providers: TWO_PROVIDERS });
  await using dir = await tempDir();
  const { cacheDir, config } = await writeFakeConfig(dir.path, fake);
  const a = fake.archive("alpha", "1.0.0", "linux_amd64");
  // Something in the way of the archive's final name: the commit's rename fails.
  await Deno.mkdir(join(cacheDir, "packages", H, "example", "alpha", a.filename, "x"), {
    recursive: true,
  });
  const run = await runCli(["warm", "-c", config, "-p", "linux_amd64", `${H}/example/alpha@1.0.0`]);
  assertEquals(run.code, 1, run.stdout + run.stderr);
  assertMatch(run.stdout, /0 fetched/);
  assertMatch(run.stdout, /1 failed/);
  assertMatch(run.stderr, /FAILED .*alpha 1\.0\.0 linux_amd64: served, but not stored/);
  assertEquals(
    await exists(
      join(cacheDir, "refs", H, "example", "alpha", "1.0.0", "archive_linux_amd64.json"),
    ),
    false,
    "no record without its archive",
  );
});
