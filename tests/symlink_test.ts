/**
 * Symbolic links and the cache (issue 10, row 11). Repoxy follows no link
 * inside its cache dir: a planted link is never served and never counted, a
 * linked directory of the layout is refused at start-up with a message, and
 * the cache dir itself may be a link (it is resolved once).
 * @module
 */
import { assert, assertEquals, assertMatch, assertRejects } from "../lib/deps/assert.ts";
import { join } from "../lib/deps/path.ts";
import { CacheLayoutError } from "../lib/cache/cache_dir.ts";
import { verifyCache } from "../lib/commands/verify.ts";
import { runCli, writeFakeConfig } from "./_cli.ts";
import { startFakeRegistry } from "./fake_registry.ts";
import {
  bytesOf,
  makeTestApp,
  mirrorFixture,
  sha256Hex,
  tempDir,
  TWO_PROVIDERS,
} from "./_helpers.ts";
import { memoryLogger } from "../lib/base/log.ts";

const H = "registry.terraform.io";

Deno.test("a planted same-size link to a file outside the cache is never served nor counted", async () => {
  await using t = await mirrorFixture({
    providers: TWO_PROVIDERS,
    config: { backgroundVerify: { rate: 0 } },
  });
  await using outside = await tempDir();
  const a = t.fake.archive("alpha", "1.0.0", "linux_amd64");
  const url = `/${H}/example/alpha/${a.filename}`;
  await bytesOf(await t.get(url));
  await t.app.settle();
  const zipGets = () => t.fake.count((r) => r.server === "release" && r.path.endsWith(".zip"));
  const perDownload = zipGets();

  // Same size, other bytes, outside the cache dir.
  const secret = join(outside.path, "secret");
  const fake = new Uint8Array(a.bytes.length).fill(0x41);
  await Deno.writeFile(secret, fake);
  const stored = join(t.dir.path, "packages", H, "example", "alpha", a.filename);
  await Deno.remove(stored);
  await Deno.symlink(secret, stored);

  // What the maintenance side sees: not an archive.
  await t.app.inventory.scan();
  assertEquals(t.app.inventory.count, 0, "the inventory does not count the link");
  const report = await verifyCache(t.dir.path, { log: memoryLogger() });
  assertEquals(report.checked, 0, "verify does not see it either");

  const res = await t.get(url);
  assertEquals(res.status, 200);
  assertEquals(res.headers.get("x-repoxy-cache"), "miss", "not served from the link");
  const got = await bytesOf(res);
  assertEquals(sha256Hex(got), a.sha256);
  await t.app.settle();
  assertEquals(zipGets() - perDownload, perDownload, "fetched again from the upstream");
  const st = await Deno.lstat(stored);
  assert(st.isFile && !st.isSymlink, "the link was replaced by the verified archive");
  assertEquals(await Deno.readFile(secret), fake, "the outside file is untouched");
  assertEquals(t.app.inventory.count, 1);
});

Deno.test("a linked directory of the layout is refused at start-up, by the server and by verify", async () => {
  await using fake = await startFakeRegistry({ providers: TWO_PROVIDERS });
  await using dir = await tempDir();
  const cacheDir = join(dir.path, "cache");
  {
    await using t = await makeTestApp(fake, cacheDir);
    const a = fake.archive("alpha", "1.0.0", "linux_amd64");
    await bytesOf(await t.get(`/${H}/example/alpha/${a.filename}`));
    await t.app.settle();
  }
  // packages/<host> "moved to another disk".
  const moved = join(dir.path, "other-disk");
  await Deno.rename(join(cacheDir, "packages", H), moved);
  await Deno.symlink(moved, join(cacheDir, "packages", H));

  let err: Error | undefined;
  await makeTestApp(fake, cacheDir).then(
    async (t) => await t[Symbol.asyncDispose](),
    (e) => err = e,
  );
  assert(err instanceof CacheLayoutError, `the server refuses to start: ${err}`);
  assertMatch(err.message, /packages\/registry\.terraform\.io is a symbolic link/);
  assertMatch(err.message, /Move the whole cache directory/);
  await assertRejects(() => verifyCache(cacheDir), CacheLayoutError);

  const { config } = await writeFakeConfig(dir.path, fake, { cacheDir });
  const run = await runCli(["prune", "-c", config, "--max-size", "0"]);
  assert(run.code !== 0, "prune refuses too");
  assertMatch(run.stderr, /^repoxy prune: .*packages\/registry\.terraform\.io is a symbolic link/m);
  assert(!run.stderr.includes("Uncaught"), "a message, not a stack trace");
  assertEquals((await Array.fromAsync(Deno.readDir(moved))).length, 1, "nothing was evicted");
});

Deno.test("the cache dir itself may be a link: it is resolved once and works", async () => {
  await using t = await mirrorFixture({ providers: TWO_PROVIDERS });
  await using dir = await tempDir();
  const link = join(dir.path, "cache-link");
  await Deno.symlink(t.dir.path, link);
  await using t2 = await makeTestApp(t.fake, link);
  assertEquals(t2.app.cache.root, await Deno.realPath(t.dir.path));
  const a = t.fake.archive("beta", "2.3.4", "linux_amd64");
  const url = `/${H}/example/beta/${a.filename}`;
  assertEquals(sha256Hex(await bytesOf(await t2.get(url))), a.sha256);
  await t2.app.settle();
  const hit = await t2.get(url);
  assertEquals(hit.headers.get("x-repoxy-cache"), "hit");
  assertEquals(sha256Hex(await bytesOf(hit)), a.sha256);
});

Deno.test("a directory link planted while running: nothing is served from or written through it", async () => {
  await using t = await mirrorFixture({
    providers: TWO_PROVIDERS,
    config: { backgroundVerify: { rate: 0 } },
  });
  await using outside = await tempDir();
  const a = t.fake.archive("alpha", "1.0.0", "linux_amd64");
  const url = `/${H}/example/alpha/${a.filename}`;
  await bytesOf(await t.get(url));
  await t.app.settle();
  // The provider dir moves out and a link takes its place: the archive and
  // its record are intact behind it, and still not served.
  const typeDir = join(t.dir.path, "packages", H, "example", "alpha");
  const moved = join(outside.path, "alpha");
  await Deno.rename(typeDir, moved);
  await Deno.symlink(moved, typeDir);
  const res = await t.get(url);
  assertEquals(res.status, 200);
  assertEquals(res.headers.get("x-repoxy-cache"), "miss", "not a hit through the link");
  assertEquals(sha256Hex(await bytesOf(res)), a.sha256, "the client still gets verified bytes");
  await t.app.settle();
  const behind = await Array.fromAsync(Deno.readDir(moved));
  assertEquals(behind.map((e) => e.name), [a.filename], "nothing new written through the link");
  assertEquals(await Deno.readFile(join(moved, a.filename)), a.bytes);
  await t.app.inventory.scan();
  assertEquals(t.app.inventory.count, 0, "not counted either");
});
