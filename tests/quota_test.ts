/**
 * Cache quota: `maxCacheSize`, `repoxy prune`, LRU by access time, and archives
 * being served (shared lock) never evicted.
 */
import { buildConfig } from "../lib/config/config.ts";
import { assert, assertEquals, assertMatch, assertRejects } from "../lib/deps/assert.ts";
import { join } from "../lib/deps/path.ts";
import { pruneCache } from "../lib/cache/quota.ts";
import { openCacheDir } from "../lib/cache/cache_dir.ts";
import { memoryLogger } from "../lib/base/log.ts";
import { formatSize, parseSize } from "../lib/base/size.ts";
import { type FakeArchive, startFakeRegistry } from "./fake_registry.ts";
import { runCli, writeFakeConfig } from "./_cli.ts";
import { bytesOf, exists, makeTestApp, tempDir, TWO_PROVIDERS } from "./_helpers.ts";

const H = "registry.terraform.io";

Deno.test("parseSize and formatSize", () => {
  assertEquals(parseSize("50GB"), 50_000_000_000);
  assertEquals(parseSize("500 MB"), 500_000_000);
  assertEquals(parseSize("2GiB"), 2 * 1024 ** 3);
  assertEquals(parseSize("1.5kb"), 1500);
  assertEquals(parseSize("1048576"), 1048576);
  assertEquals(parseSize(4096), 4096);
  for (const bad of ["lots", "5XB", "-1", "", "1e3", -1, 1.5, null, {}]) {
    assertEquals(parseSize(bad), undefined, JSON.stringify(bad));
  }
  assertEquals(formatSize(999), "999 B");
  assertEquals(formatSize(12_345_678), "12.3 MB");
  assertEquals(formatSize(50_000_000_000), "50.0 GB");
});

Deno.test("maxCacheSize is validated with a clear error", async () => {
  assertEquals((await buildConfig({ maxCacheSize: "50GB" })).maxCacheSizeBytes, 50e9);
  assertEquals((await buildConfig({ maxCacheSize: 1000 })).maxCacheSizeBytes, 1000);
  assertEquals((await buildConfig({})).maxCacheSizeBytes, undefined);
  for (const bad of ["fifty gigs", -5, true, "10 parsecs"]) {
    await assertRejects(() => buildConfig({ maxCacheSize: bad }), {
      name: "ConfigError",
      message:
        `"maxCacheSize" must be a size such as "50GB", "500MB", "2GiB" or a number of bytes, got ${
          JSON.stringify(bad)
        }`,
    });
  }
});

async function cacheFour(fake: Awaited<ReturnType<typeof startFakeRegistry>>, cacheDir: string) {
  const wanted = [
    fake.archive("alpha", "1.0.0", "linux_amd64"),
    fake.archive("alpha", "1.0.0", "darwin_arm64"),
    fake.archive("alpha", "1.0.0", "windows_amd64"),
    fake.archive("beta", "2.3.4", "linux_amd64"),
  ];
  {
    await using t = await makeTestApp(fake, cacheDir);
    for (const a of wanted) await bytesOf(await t.get(`/${H}/example/${a.type}/${a.filename}`));
    await t.app.settle();
  }
  return wanted;
}

const pathOf = (cacheDir: string, a: FakeArchive) =>
  join(cacheDir, "packages", H, "example", a.type, a.filename);

async function setLastUse(path: string, t: number) {
  const st = await Deno.stat(path);
  await Deno.utime(path, new Date(t), st.mtime!);
}

Deno.test("repoxy prune evicts least recently used first, down to the size, skipping an archive being served", async () => {
  await using fake = await startFakeRegistry({ providers: TWO_PROVIDERS });
  await using dir = await tempDir();
  const { cacheDir, config } = await writeFakeConfig(dir.path, fake);
  const [a, b, c, d] = await cacheFour(fake, cacheDir) as [
    FakeArchive,
    FakeArchive,
    FakeArchive,
    FakeArchive,
  ];
  const total = [a, b, c, d].reduce((n, x) => n + x.bytes.length, 0);

  await using server = await makeTestApp(fake, cacheDir);
  // A hit records the access (for LRU)...
  await setLastUse(pathOf(cacheDir, a), 1_000_000);
  const before = Date.now();
  const serving = await server.get(`/${H}/example/alpha/${a.filename}`);
  assertEquals(serving.headers.get("x-repoxy-cache"), "hit");
  assert(
    (await Deno.stat(pathOf(cacheDir, a))).atime!.getTime() >= before - 1000,
    "a hit updates atime",
  );
  // ...and while its body is unread, the server holds the file open and locked.
  // Make it the least recently used anyway, so prune must choose and skip it.
  for (const [x, at] of [[a, 1_000_000], [b, 2_000_000], [c, 3_000_000], [d, 4_000_000]] as const) {
    await setLastUse(pathOf(cacheDir, x), at);
  }
  const mtimeD = (await Deno.stat(pathOf(cacheDir, d))).mtime!.getTime();

  const limit = total - b.bytes.length - c.bytes.length;
  const dry = await runCli(["prune", "-c", config, "--max-size", String(limit), "--dry-run"]);
  assertEquals(dry.code, 0, dry.stderr);
  assertMatch(
    dry.stdout,
    /would evict registry\.terraform\.io\/example\/alpha 1\.0\.0 linux_amd64/,
  );
  assert(await exists(pathOf(cacheDir, a)), "a dry run evicts nothing");

  // prune runs in its own process: the lock it respects is the server's.
  const run = await runCli(["prune", "-c", config, "--max-size", String(limit)]);
  assertEquals(run.code, 0, run.stderr);
  assertMatch(run.stderr, new RegExp(`skipped .*${a.filename}: in use`));
  assertEquals(
    run.stdout.split("\n").filter((l) => l.startsWith("evicted ")),
    [
      `evicted ${H}/example/alpha 1.0.0 darwin_arm64 (${formatSize(b.bytes.length)})`,
      `evicted ${H}/example/alpha 1.0.0 windows_amd64 (${formatSize(c.bytes.length)})`,
    ],
  );
  assertMatch(run.stdout, /prune: evicted 2 of 4 archive\(s\).*; 1 in use skipped/);
  assertEquals(
    await Promise.all([a, b, c, d].map((x) => exists(pathOf(cacheDir, x)))),
    [true, false, false, true],
  );
  assertEquals(
    await exists(
      join(cacheDir, "refs", H, "example", "alpha", "1.0.0", "archive_darwin_arm64.json"),
    ),
    false,
    "an evicted archive's record goes with it",
  );
  assertEquals((await Deno.stat(pathOf(cacheDir, d))).mtime!.getTime(), mtimeD, "mtime untouched");

  // The busy download completes intact; afterwards the file can go.
  assertEquals(await bytesOf(serving), a.bytes);
  // Reading it was a use (the kernel's relatime may say so too); pin the order again.
  await setLastUse(pathOf(cacheDir, a), 1_000_000);
  await using opened = await openCacheDir(cacheDir, memoryLogger());
  const next = await pruneCache(opened, { maxBytes: d.bytes.length });
  assertEquals(next.evicted.map((f) => f.filename), [a.filename]);
  assertEquals(next.sizeAfter, d.bytes.length);

  // An evicted archive is simply fetched again on the next request.
  const refetch = await server.get(`/${H}/example/alpha/${b.filename}`);
  assertEquals(refetch.headers.get("x-repoxy-cache"), "miss");
  assertEquals(await bytesOf(refetch), b.bytes);
});

Deno.test("prune exits 1 when busy archives keep the cache over the size", async () => {
  await using fake = await startFakeRegistry({ providers: TWO_PROVIDERS });
  await using dir = await tempDir();
  const { cacheDir, config } = await writeFakeConfig(dir.path, fake);
  const [a] = await cacheFour(fake, cacheDir) as [FakeArchive];
  using held = await Deno.open(pathOf(cacheDir, a), { read: true });
  await held.lock(false);
  const run = await runCli(["prune", "-c", config, "--max-size", "0"]);
  assertEquals(run.code, 1);
  assertMatch(run.stderr, /still over 0 B/);
  assert(await exists(pathOf(cacheDir, a)));
  const noSize = await runCli(["prune", "-c", config]);
  assertEquals(noSize.code, 2);
  assertMatch(noSize.stderr, /give --max-size or set "maxCacheSize"/);
});

Deno.test("a server with maxCacheSize prunes after each stored archive, never the one just stored", async () => {
  await using fake = await startFakeRegistry({ providers: TWO_PROVIDERS });
  await using dir = await tempDir();
  const archives = [
    fake.archive("alpha", "1.1.0", "linux_amd64"),
    fake.archive("alpha", "1.1.0", "darwin_arm64"),
    fake.archive("alpha", "1.1.0", "windows_amd64"),
  ];
  const max = archives[0]!.bytes.length + archives[1]!.bytes.length + 10;
  await using t = await makeTestApp(fake, dir.path, { maxCacheSize: max });
  let clock = 1_000_000;
  for (const a of archives) {
    assertEquals(await bytesOf(await t.get(`/${H}/example/alpha/${a.filename}`)), a.bytes);
    await t.app.settle();
    // Distinct, increasing last-use times regardless of filesystem timestamp granularity.
    await setLastUse(join(dir.path, "packages", H, "example", "alpha", a.filename), clock += 1000);
  }
  const present = await Promise.all(
    archives.map((a) => exists(join(dir.path, "packages", H, "example", "alpha", a.filename))),
  );
  assertEquals(present, [false, true, true]);
  assert(t.log.records.some((r) => r.msg === "cache pruned" && r.evicted === 1));

  // An archive bigger than the whole quota is passed through, verified, and
  // never written (temp space counts inside maxCacheSize).
  await using dir2 = await tempDir();
  await using tiny = await makeTestApp(fake, dir2.path, { maxCacheSize: 1 });
  const res = await tiny.get(`/${H}/example/alpha/${archives[0]!.filename}`);
  assertEquals(res.headers.get("x-repoxy-cache"), "bypass");
  assertEquals(await bytesOf(res), archives[0]!.bytes);
  await tiny.app.settle();
  assert(!await exists(join(dir2.path, "packages", H, "example", "alpha", archives[0]!.filename)));
  assert(tiny.log.records.some((r) => r.msg === "archive passed through without caching"));
});
