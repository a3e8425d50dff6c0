/**
 * Single-flight downloads and metadata refreshes, late joiners, client
 * aborts, and a cache directory that cannot be written.
 */
import { assert, assertEquals } from "../lib/deps/assert.ts";
import { join } from "../lib/deps/path.ts";
import type { FakeRegistry } from "./fake_registry.ts";
import {
  bytesOf,
  exists,
  jsonOf,
  listDir,
  makeTestApp,
  mirrorFixture,
  sha256Hex,
  tempDir,
  TWO_PROVIDERS,
} from "./_helpers.ts";
import { slowArchiveFake } from "./_slow.ts";

const H = "registry.terraform.io";

/** A fake whose alpha 1.0.0 linux_amd64 archive is ~1 MiB and trickles out in 64 KiB steps. */
function slowFake(delayMs = 15): Promise<FakeRegistry> {
  return slowArchiveFake({ size: 1 << 20, chunk: 64 * 1024, delayMs });
}

const ZIP = `/${H}/example/alpha/terraform-provider-alpha_1.0.0_linux_amd64.zip`;
const isZipFetch = (r: { server: string; path: string }) =>
  r.server === "release" && r.path.startsWith("/files/") && r.path.endsWith(".zip");

Deno.test("N concurrent requests for one uncached archive cause one upstream download", async () => {
  await using fake = await slowFake();
  await using dir = await tempDir();
  await using t = await makeTestApp(fake, dir.path);
  const want = fake.archive("alpha", "1.0.0", "linux_amd64");

  // Eight clients at once, then four late joiners once part of it is on disk.
  const early = Array.from({ length: 8 }, () => t.get(ZIP).then(bytesOf));
  await new Promise((r) => setTimeout(r, 120));
  const late = Array.from({ length: 4 }, () => t.get(ZIP).then(bytesOf));
  const all = await Promise.all([...early, ...late]);
  for (const got of all) {
    assertEquals(got.length, want.bytes.length);
    assertEquals(sha256Hex(got), want.sha256);
  }
  await t.app.settle();
  assertEquals(fake.count(isZipFetch), 1, "exactly one upstream download");
  assertEquals(fake.count((r) => r.path.endsWith("/download/linux/amd64")), 1);
  const misses = t.log.records.filter((r) =>
    r.msg === "request" && r.path === ZIP && r.cache === "miss"
  );
  assertEquals(misses.length, 12);
});

Deno.test("concurrent metadata misses share one upstream request", async () => {
  await using t = await mirrorFixture({ providers: TWO_PROVIDERS });
  const { fake } = t;
  const answers = await Promise.all(
    Array.from({ length: 20 }, () => t.get(`/${H}/example/alpha/1.0.0.json`).then(jsonOf)),
  );
  for (const a of answers) assertEquals(a, answers[0]);
  assertEquals(fake.count((r) => r.path.startsWith("/.well-known")), 1);
  assertEquals(fake.count((r) => r.path.endsWith("/alpha/versions")), 1);
  assertEquals(fake.count((r) => r.path.includes("/download/")), 1);
  assertEquals(fake.count((r) => r.path.endsWith("/SHA256SUMS")), 1);
});

Deno.test("a client that disconnects does not stop the download for others or the cache", async () => {
  await using fake = await slowFake();
  await using dir = await tempDir();
  await using t = await makeTestApp(fake, dir.path);
  const want = fake.archive("alpha", "1.0.0", "linux_amd64");

  const quitter = await t.get(ZIP);
  const patient = t.get(ZIP).then(bytesOf);
  const reader = quitter.body!.getReader();
  const first = await reader.read();
  assert(!first.done && first.value.length > 0);
  await reader.cancel("client went away");

  assertEquals(sha256Hex(await patient), want.sha256);
  await t.app.settle();
  assertEquals(
    await Deno.readFile(join(dir.path, "packages", H, "example", "alpha", want.filename)),
    want.bytes,
  );
  assert(t.log.records.some((r) => r.msg === "request" && r.note === "client went away"));
});

Deno.test("a lone client that disconnects: the download still completes into the cache", async () => {
  await using fake = await slowFake(5);
  await using dir = await tempDir();
  await using t = await makeTestApp(fake, dir.path);
  const want = fake.archive("alpha", "1.0.0", "linux_amd64");
  const res = await t.get(ZIP);
  const reader = res.body!.getReader();
  await reader.read();
  await reader.cancel();
  await t.app.settle();
  const stored = join(dir.path, "packages", H, "example", "alpha", want.filename);
  assertEquals(sha256Hex(await Deno.readFile(stored)), want.sha256);
  const before = fake.count(isZipFetch);
  const hit = await t.get(ZIP);
  assertEquals(hit.headers.get("x-repoxy-cache"), "hit");
  assertEquals(sha256Hex(await bytesOf(hit)), want.sha256);
  assertEquals(fake.count(isZipFetch), before);
});

Deno.test("an unwritable cache: the client still gets verified bytes, nothing is cached", async () => {
  await using t = await mirrorFixture({ providers: TWO_PROVIDERS });
  const { fake, dir } = t;
  // Running as root ignores permission bits, so break the temp dir another way:
  // a file where the directory should be makes every create fail.
  await Deno.remove(join(dir.path, "tmp"), { recursive: true });
  await Deno.writeTextFile(join(dir.path, "tmp"), "not a directory");

  const fa = fake.archive("beta", "2.3.4", "darwin_arm64");
  const res = await t.get(`/${H}/example/beta/${fa.filename}`);
  assertEquals(res.status, 200);
  assertEquals(res.headers.get("x-repoxy-cache"), "bypass");
  assertEquals(await bytesOf(res), fa.bytes);
  await t.app.settle();
  assertEquals(await exists(join(dir.path, "packages", H, "example", "beta", fa.filename)), false);
  assert(
    t.log.records.some((r) =>
      r.msg === "cache not writable; streaming the archive without caching it"
    ),
  );
  assert(
    t.log.records.some((r) => r.msg === "cannot write metadata to the cache; serving it uncached"),
  );
  assertEquals(await listDir(join(dir.path, "packages", H)), []);
});
