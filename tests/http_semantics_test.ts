/**
 * HTTP caching semantics through the whole handler: cached archives (Range,
 * If-Range, 304, HEAD) and metadata JSON (ETag, 304, kept answers that stay
 * consistent with the cache). Handler-level, with the fake registry upstream.
 */
import { assert, assertEquals, assertNotEquals } from "../lib/deps/assert.ts";
import type { FakeRegistry } from "./fake_registry.ts";
import { bytesOf, jsonOf, mirrorFixture, type TestApp, TWO_PROVIDERS } from "./_helpers.ts";

const H = "registry.terraform.io";

/** Caches one archive through the app and returns its path and bytes. */
async function cachedArchive(t: TestApp, fake: FakeRegistry) {
  const fa = fake.archive("alpha", "1.1.0", "linux_amd64");
  const path = `/${H}/example/alpha/${fa.filename}`;
  const miss = await t.get(path);
  assertEquals(miss.headers.get("x-repoxy-cache"), "miss");
  await bytesOf(miss);
  await t.app.settle();
  return { path, fa };
}

Deno.test("a cached archive answers ranges, If-Range, 304 and HEAD", async () => {
  await using t = await mirrorFixture({ providers: TWO_PROVIDERS });
  const { fake } = t;
  const { path, fa } = await cachedArchive(t, fake);
  const size = fa.bytes.length;
  const etag = `"${fa.sha256}"`;

  const full = await t.get(path);
  assertEquals(full.status, 200);
  assertEquals(full.headers.get("etag"), etag);
  assertEquals(full.headers.get("accept-ranges"), "bytes");
  assertEquals(full.headers.get("cache-control"), "public, max-age=31536000, immutable");
  const lastModified = full.headers.get("last-modified");
  assert(lastModified !== null);
  await full.body?.cancel();

  const first = await t.get(path, { headers: { range: "bytes=0-0" } });
  assertEquals(first.status, 206);
  assertEquals(first.headers.get("content-range"), `bytes 0-0/${size}`);
  assertEquals(first.headers.get("x-repoxy-cache"), "hit");
  assertEquals(await bytesOf(first), fa.bytes.slice(0, 1));

  const last = await t.get(path, { headers: { range: "bytes=-1" } });
  assertEquals(last.status, 206);
  assertEquals(await bytesOf(last), fa.bytes.slice(size - 1));

  const resume = await t.get(path, { headers: { range: "bytes=100-", "if-range": etag } });
  assertEquals(resume.status, 206);
  assertEquals(resume.headers.get("content-length"), String(size - 100));
  assertEquals(await bytesOf(resume), fa.bytes.slice(100));

  const past = await t.get(path, { headers: { range: `bytes=${size}-` } });
  assertEquals(past.status, 416);
  assertEquals(past.headers.get("content-range"), `bytes */${size}`);
  await past.body?.cancel();

  // A resume against other bytes (another ETag) must restart from byte 0.
  const stale = await t.get(path, {
    headers: { range: "bytes=100-", "if-range": `"${"0".repeat(64)}"` },
  });
  assertEquals(stale.status, 200);
  assertEquals(await bytesOf(stale), fa.bytes);

  for (
    const headers of [{ "if-none-match": etag }, { "if-modified-since": lastModified! }]
  ) {
    const res = await t.get(path, { headers });
    assertEquals(res.status, 304, JSON.stringify(headers));
    assertEquals(res.headers.get("etag"), etag);
    assertEquals(res.headers.get("x-repoxy-cache"), "hit");
    assertEquals(res.body, null);
  }

  const head = await t.get(path, { method: "HEAD" });
  assertEquals(head.status, 200);
  assertEquals(head.headers.get("content-length"), String(size));
  assertEquals(head.body, null);

  // Each of these wrote one access log line with the real status and bytes.
  const lines = t.log.records.filter((r) => r.msg === "request" && r.path === path);
  assertEquals(lines.map((r) => [r.status, r.bytes]), [
    [200, size], // the miss
    [200, 0], // cancelled before reading
    [206, 1],
    [206, 1],
    [206, size - 100],
    [416, 0],
    [200, size],
    [304, 0],
    [304, 0],
    [200, 0], // HEAD
  ]);
  assertEquals(lines[1]!.note, "client went away");
});

Deno.test("metadata JSON carries an ETag and answers If-None-Match with 304", async () => {
  // A still clock: answers built from a version list say how long it stays fresh.
  await using t = await mirrorFixture({ providers: TWO_PROVIDERS, deps: { now: () => 1e12 } });
  for (
    const path of [
      `/${H}/example/alpha/index.json`,
      `/${H}/example/alpha/1.0.0.json`,
      `/v1/providers/example/alpha/versions`,
      `/v1/providers/example/alpha/1.0.0/download/linux/amd64`,
    ]
  ) {
    const res = await t.get(path);
    assertEquals(res.status, 200, path);
    const maxAge = path.includes("/download/") ? 60 : 30;
    assertEquals(res.headers.get("cache-control"), `public, max-age=${maxAge}`, path);
    const etag = res.headers.get("etag");
    assert(etag?.startsWith('"'), path);
    const body = await bytesOf(res);
    assertEquals(res.headers.get("content-length"), String(body.length), path);

    const again = await t.get(path, { headers: { "if-none-match": etag! } });
    assertEquals(again.status, 304, path);
    assertEquals(again.headers.get("etag"), etag, path);
    assertEquals(again.body, null, path);

    const other = await t.get(path, { headers: { "if-none-match": '"other"' } });
    assertEquals(other.status, 200, path);
    assertEquals(await bytesOf(other), body, path);

    const head = await t.get(path, { method: "HEAD" });
    assertEquals(head.status, 200, path);
    assertEquals(head.headers.get("content-length"), String(body.length), path);
    assertEquals(head.headers.get("etag"), etag, path);
    assertEquals(head.body, null, path);
  }
});

Deno.test("kept metadata answers change as soon as the cache does (new h1:, new ETag)", async () => {
  await using t = await mirrorFixture({ providers: TWO_PROVIDERS });
  const { fake } = t;
  const vpath = `/${H}/example/alpha/1.1.0.json`;
  const before = await t.get(vpath);
  const etagBefore = before.headers.get("etag")!;
  const docBefore = await jsonOf(before) as { archives: Record<string, { hashes: string[] }> };
  assertEquals(docBefore.archives.linux_amd64!.hashes.length, 1, "only zh: before caching");

  // Hits are answered from memory: no upstream request at all.
  const upstreamBefore = fake.count();
  for (let i = 0; i < 3; i++) {
    await bytesOf(await t.get(vpath));
    await bytesOf(await t.get(`/${H}/example/alpha/index.json`));
  }
  assertEquals(fake.count(), upstreamBefore, "hits must not reach the upstream");

  await cachedArchive(t, fake);
  const after = await t.get(vpath, { headers: { "if-none-match": etagBefore } });
  assertEquals(after.status, 200, "the old ETag no longer matches");
  assertNotEquals(after.headers.get("etag"), etagBefore);
  const docAfter = await jsonOf(after) as { archives: Record<string, { hashes: string[] }> };
  assert(docAfter.archives.linux_amd64!.hashes[0]!.startsWith("h1:"), "h1: appears at once");
});

Deno.test("kept index.json answers expire with the version list", async () => {
  let now = 5_000_000;
  await using t = await mirrorFixture({ providers: TWO_PROVIDERS, deps: { now: () => now } });
  const { fake } = t;
  const path = `/${H}/example/beta/index.json`;
  await bytesOf(await t.get(path));
  await bytesOf(await t.get(path));
  assertEquals(fake.count((r) => r.path.endsWith("/versions")), 1);
  now += 11 * 60_000; // past the default 10 minute TTL
  const later = await t.get(path);
  assertEquals(later.headers.get("x-repoxy-cache"), "miss");
  await bytesOf(later);
  assertEquals(fake.count((r) => r.path.endsWith("/versions")), 2);
});
