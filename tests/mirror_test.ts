/**
 * Network mirror protocol against the fake registry: handler-level requests,
 * real upstream sockets.
 */
import { hashZipH1 } from "../lib/integrity/dirhash.ts";
import { assert, assertEquals, assertMatch } from "../lib/deps/assert.ts";
import { join } from "../lib/deps/path.ts";
import { startFakeRegistry } from "./fake_registry.ts";
import {
  bytesOf,
  exists,
  jsonOf,
  makeTestApp,
  mirrorFixture,
  sha256Hex,
  tempDir,
  tempLeftovers,
  TWO_PROVIDERS,
} from "./_helpers.ts";

const H = "registry.terraform.io";

Deno.test("index.json lists every upstream version and caches the list within the TTL", async () => {
  let now = 1_000_000;
  await using t = await mirrorFixture({ providers: TWO_PROVIDERS, deps: { now: () => now } });
  const { fake, dir } = t;

  const res = await t.get(`/${H}/example/alpha/index.json`);
  assertEquals(res.status, 200);
  assertEquals(res.headers.get("content-type"), "application/json");
  assertEquals(res.headers.get("x-repoxy-cache"), "miss");
  assertEquals(await jsonOf(res), { versions: { "1.1.0": {}, "1.0.0": {} } });
  // discovery + versions
  assertEquals(fake.count(), 2);
  assertEquals(fake.requests.map((r) => r.path), [
    "/.well-known/terraform.json",
    "/v1/providers/example/alpha/versions",
  ]);

  const again = await t.get(`/${H}/example/alpha/index.json`);
  assertEquals(again.headers.get("x-repoxy-cache"), "hit");
  await again.body?.cancel();
  assertEquals(fake.count(), 2, "a second hit within the TTL must not call the upstream");

  // The stored version list is on disk under refs/ with its fetch time.
  const stored = JSON.parse(
    await Deno.readTextFile(join(dir.path, "refs", H, "example", "alpha", "versions.json")),
  );
  assertEquals(stored.fetchedAt, 1_000_000);

  now += 11 * 60_000; // past the default 10 minute TTL
  const later = await t.get(`/${H}/example/alpha/index.json`);
  assertEquals(later.headers.get("x-repoxy-cache"), "miss");
  await later.body?.cancel();
  assertEquals(fake.count((r) => r.path.endsWith("/versions")), 2);
  assertEquals(
    fake.count((r) => r.path.startsWith("/.well-known")),
    1,
    "discovery has its own, longer TTL",
  );
});

Deno.test("{version}.json lists every platform with relative urls and zh: hashes from the upstream", async () => {
  await using t = await mirrorFixture({ providers: TWO_PROVIDERS });
  const { fake } = t;

  const res = await t.get(`/${H}/example/beta/2.3.4.json`);
  assertEquals(res.status, 200);
  const body = await jsonOf(res) as { archives: Record<string, { url: string; hashes: string[] }> };
  assertEquals(Object.keys(body.archives).sort(), ["darwin_arm64", "linux_amd64", "linux_arm64"]);
  for (const [platform, a] of Object.entries(body.archives)) {
    const fa = fake.archive("beta", "2.3.4", platform);
    assertEquals(a.url, `terraform-provider-beta_2.3.4_${platform}.zip`);
    assertEquals(a.hashes, [`zh:${fa.sha256}`]);
  }
  // versions, one download document, SHA256SUMS and its signature (+ discovery)
  assertEquals(fake.count((r) => r.path.includes("/download/")), 1);
  assertEquals(fake.count((r) => r.path.endsWith("/SHA256SUMS")), 1);

  const again = await t.get(`/${H}/example/beta/2.3.4.json`);
  assertEquals(again.headers.get("x-repoxy-cache"), "hit");
  await again.body?.cancel();
  const before = fake.count();
  const third = await t.get(`/${H}/example/beta/2.3.4.json`);
  await third.body?.cancel();
  assertEquals(fake.count(), before, "per-version documents are kept for good");
});

Deno.test("archive miss streams upstream bytes, stores them in the mirror layout, then hits", async () => {
  await using t = await mirrorFixture({ providers: TWO_PROVIDERS });
  const { fake, dir } = t;
  const fa = fake.archive("alpha", "1.1.0", "linux_amd64");

  const res = await t.get(`/${H}/example/alpha/${fa.filename}`);
  assertEquals(res.status, 200);
  assertEquals(res.headers.get("content-type"), "application/zip");
  assertEquals(res.headers.get("x-repoxy-cache"), "miss");
  assertEquals(res.headers.get("content-length"), String(fa.bytes.length));
  const got = await bytesOf(res);
  assertEquals(sha256Hex(got), fa.sha256);
  assertEquals(got, fa.bytes);
  await t.app.settle();

  // download_url redirects once on the release host: 2 requests for the bytes.
  assertEquals(fake.count((r) => r.server === "release" && r.path.endsWith(".zip")), 2);
  const stored = join(dir.path, "packages", H, "example", "alpha", fa.filename);
  assertEquals(await Deno.readFile(stored), fa.bytes);
  assertEquals(await tempLeftovers(dir.path), []);

  const before = fake.count();
  const hit = await t.get(`/${H}/example/alpha/${fa.filename}`);
  assertEquals(hit.headers.get("x-repoxy-cache"), "hit");
  assertEquals(hit.headers.get("etag"), `"${fa.sha256}"`);
  assertEquals(await bytesOf(hit), fa.bytes);
  assertEquals(fake.count(), before, "a cached archive is served without the upstream");

  // Once cached, {version}.json carries the archive's h1: as well.
  const v = await jsonOf(await t.get(`/${H}/example/alpha/1.1.0.json`)) as {
    archives: Record<string, { hashes: string[] }>;
  };
  const h1 = await hashZipH1(stored);
  assertEquals(v.archives.linux_amd64!.hashes, [h1, `zh:${fa.sha256}`]);
  assertEquals(v.archives.darwin_arm64!.hashes, [
    `zh:${fake.archive("alpha", "1.1.0", "darwin_arm64").sha256}`,
  ]);

  // One access log line per request, with method, path, status, bytes, ms, cache.
  const lines = t.log.records.filter((r) => r.msg === "request");
  const first = lines.find((r) => r.path === `/${H}/example/alpha/${fa.filename}`)!;
  assertEquals([first.method, first.status, first.bytes, first.cache], [
    "GET",
    200,
    fa.bytes.length,
    "miss",
  ]);
  assert(typeof first.ms === "number");
});

Deno.test("an archive whose sha256 does not match the upstream shasum is never cached", async () => {
  await using t = await mirrorFixture({
    providers: TWO_PROVIDERS,
    registry: { // The release host serves different bytes than SHA256SUMS and the download document promise.
      intercept: (req, server) => {
        if (
          server === "release" && new URL(req.url).pathname.startsWith("/files/") &&
          req.url.endsWith(".zip")
        ) {
          return new Response(new Uint8Array(500).fill(7), {
            headers: { "content-length": "500" },
          });
        }
      },
    },
  });
  const { fake, dir } = t;
  const fa = fake.archive("alpha", "1.0.0", "linux_amd64");

  const res = await t.get(`/${H}/example/alpha/${fa.filename}`);
  assertEquals(res.status, 200); // headers go out before the last byte is known
  let failed = false;
  let received = 0;
  try {
    for await (const c of res.body!) received += c.length;
  } catch {
    failed = true;
  }
  assert(failed, "the body must error instead of completing");
  assert(received < 500, `the client must never get the whole bad archive (got ${received})`);
  await t.app.settle();
  assertEquals(await exists(join(dir.path, "packages", H, "example", "alpha", fa.filename)), false);
  assertEquals(await tempLeftovers(dir.path), []);
  assert(
    t.log.records.some((r) =>
      r.msg === "archive checksum mismatch; not cached" && r.got !== r.expected
    ),
  );
});

Deno.test("unknown registries, providers and versions answer 404 JSON; unknown hosts are never contacted", async () => {
  await using t = await mirrorFixture({ providers: TWO_PROVIDERS });
  const { fake } = t;

  for (
    const path of [
      "/evil.example.com/a/b/index.json",
      "/registry.opentofu.org/hashicorp/aws/index.json",
    ]
  ) {
    const res = await t.get(path);
    assertEquals(res.status, 404);
    const body = await jsonOf(res) as { errors: string[] };
    assertMatch(body.errors[0]!, /not configured/);
  }
  assertEquals(t.upstream.length, 0);

  const noProvider = await t.get(`/${H}/example/nope/index.json`);
  assertEquals(noProvider.status, 404);
  await jsonOf(noProvider);
  const noVersion = await t.get(`/${H}/example/alpha/9.9.9.json`);
  assertEquals(noVersion.status, 404);
  assertMatch(((await jsonOf(noVersion)) as { errors: string[] }).errors[0]!, /no version 9\.9\.9/);
  const noRoute = await t.get(`/nothing-here`);
  assertEquals(noRoute.status, 404);
  await jsonOf(noRoute);
  const bad = await t.get(`/${H}/example/alpha/not-semver.json`);
  assertEquals(bad.status, 400);
  await jsonOf(bad);
  // Only the fake registry was contacted.
  assert(
    t.upstream.every((u) =>
      u.url.startsWith(fake.registryUrl) || u.url.startsWith(fake.releaseUrl)
    ),
  );
});

Deno.test("the upstream token goes to the registry API only, never to the download host", async () => {
  await using fake = await startFakeRegistry({ providers: TWO_PROVIDERS });
  await using dir = await tempDir();
  await using t = await makeTestApp(fake, dir.path, {
    upstreams: { [H]: { url: fake.registryUrl, token: "s3cret-token" } },
  });
  const fa = fake.archive("beta", "2.3.4", "linux_arm64");
  await bytesOf(await t.get(`/${H}/example/beta/${fa.filename}`));
  await t.app.settle();
  const reg = fake.requests.filter((r) => r.server === "registry");
  const rel = fake.requests.filter((r) => r.server === "release");
  assert(reg.length >= 2 && rel.length >= 2);
  for (const r of reg) assertEquals(r.headers.get("authorization"), "Bearer s3cret-token", r.path);
  for (const r of rel) assertEquals(r.headers.get("authorization"), null, r.path);
  for (const r of fake.requests) assertMatch(r.headers.get("user-agent") ?? "", /^Repoxy\//);
});

Deno.test("well-known discovery and health endpoints", async () => {
  await using dir = await tempDir();
  await using t = await makeTestApp(undefined, dir.path);
  const wk = await t.get("/.well-known/terraform.json");
  assertEquals(wk.status, 200);
  assertEquals(await jsonOf(wk), {
    "modules.v1": "/v1/modules/",
    "providers.v1": "/v1/providers/",
  });
  const h = await t.get("/-/healthz");
  assertEquals(h.status, 200);
  assertEquals((await jsonOf(h) as { status: string }).status, "ok");
  const post = await t.get("/-/healthz", { method: "POST" });
  assertEquals(post.status, 405);
  await jsonOf(post);
});

Deno.test("leftover temp files are removed at start-up", async () => {
  await using dir = await tempDir();
  await Deno.mkdir(join(dir.path, "tmp"), { recursive: true });
  await Deno.writeTextFile(join(dir.path, "tmp", "x.zip.tmp-1-2-3"), "partial");
  await using t = await makeTestApp(undefined, dir.path);
  assertEquals(await tempLeftovers(dir.path), []);
  assert(t.log.records.some((r) => r.msg === "removed leftover temp files from an earlier run"));
});
