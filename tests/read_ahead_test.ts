/**
 * Read-ahead (issue 12 point 3): the upstream work for what a cold
 * `terraform init` asks next starts when the question before is answered,
 * through the same verified paths, bounded, and never at the client's cost.
 */
import { assert, assertEquals } from "../lib/deps/assert.ts";
import { join } from "../lib/deps/path.ts";
import { READ_AHEAD_SLOTS } from "../lib/sources/upstream_source.ts";
import type { RecordedRequest } from "./fake_registry.ts";
import { bytesOf, exists, jsonOf, mirrorFixture, sha256Hex } from "./_helpers.ts";

const H = "registry.terraform.io";
const PLATFORMS = ["linux_amd64", "darwin_arm64", "windows_amd64"];
const ALPHA = {
  namespace: "example",
  type: "alpha",
  versions: [
    { version: "1.0.0", platforms: PLATFORMS },
    { version: "1.2.0", platforms: PLATFORMS },
    { version: "1.10.0", platforms: PLATFORMS },
    { version: "2.0.0-beta1", platforms: PLATFORMS },
  ],
};

const docOf = (v: string) => (r: RecordedRequest) =>
  r.server === "registry" && r.path.startsWith(`/v1/providers/example/alpha/${v}/download/`);
const sumsOf = (v: string) => (r: RecordedRequest) =>
  r.server === "release" && r.path.includes(`/alpha/${v}/SHA256SUMS`);
const zips = (r: RecordedRequest) =>
  r.server === "release" && r.path.startsWith("/files/") && r.path.endsWith(".zip");

Deno.test("a version list from the upstream reads ahead the newest release's SHA256SUMS; {version}.json then costs no upstream request", async () => {
  await using t = await mirrorFixture({ providers: [ALPHA] });
  const idx = await t.get(`/${H}/example/alpha/index.json`);
  assertEquals(idx.status, 200);
  await idx.body?.cancel();
  await t.app.settle();
  // The newest release by version order (1.10.0 > 1.2.0), never the pre-release.
  assertEquals(t.fake.count(docOf("1.10.0")), 1, "one download document of 1.10.0");
  assertEquals(t.fake.count(sumsOf("1.10.0")), 2, "its SHA256SUMS and signature");
  assertEquals(t.fake.count(docOf("2.0.0-beta1")) + t.fake.count(docOf("1.2.0")), 0);
  assertEquals(t.fake.count(zips), 0, "no archive is read ahead from a list");

  const before = t.fake.count();
  const res = await t.get(`/${H}/example/alpha/1.10.0.json`);
  assertEquals(res.status, 200);
  assertEquals(res.headers.get("x-repoxy-cache"), "hit");
  const doc = await jsonOf(res) as { archives: Record<string, { hashes: string[] }> };
  assertEquals(t.fake.count(), before, "{version}.json answered without the upstream");
  for (const pl of PLATFORMS) {
    assertEquals(doc.archives[pl]!.hashes, [`zh:${t.fake.archive("alpha", "1.10.0", pl).sha256}`]);
  }

  // A list served from the cache starts nothing again.
  const again = await t.get(`/v1/providers/${H}/example/alpha/versions`);
  await again.body?.cancel();
  await t.app.settle();
  assertEquals(t.fake.count(), before);
});

Deno.test("a registry download document reads ahead SHA256SUMS and the archive into the cache; the client's requests then cost no upstream request", async () => {
  await using t = await mirrorFixture({ providers: [ALPHA] });
  const a = t.fake.archive("alpha", "1.0.0", "darwin_arm64");
  const res = await t.get(`/v1/providers/${H}/example/alpha/1.0.0/download/darwin/arm64`);
  assertEquals(res.status, 200);
  await res.body?.cancel();
  await t.app.settle();
  await t.app.downloads.inflight({ hostname: H, namespace: "example", type: "alpha" }, "1.0.0", {
    os: "darwin",
    arch: "arm64",
  })?.done;
  const stored = join(t.config.cacheDir, "packages", H, "example/alpha", a.filename);
  assert(await exists(stored), "the archive was read ahead into the cache");
  assertEquals(sha256Hex(await Deno.readFile(stored)), a.sha256);
  assertEquals(t.fake.count(zips), 1, "one archive download, of the platform asked for");

  const before = t.fake.count();
  for (const f of ["SHA256SUMS", "SHA256SUMS.sig"]) {
    const s = await t.get(`/v1/providers/${H}/example/alpha/1.0.0/${f}`);
    assertEquals(s.status, 200);
    const want = f === "SHA256SUMS"
      ? t.fake.sums.get("example/alpha/1.0.0")!
      : t.fake.signatures.get("example/alpha/1.0.0")!;
    assertEquals(await bytesOf(s), want);
  }
  const z = await t.get(`/${H}/example/alpha/${a.filename}`);
  assertEquals(z.status, 200);
  assertEquals(sha256Hex(await bytesOf(z)), a.sha256);
  assertEquals(t.fake.count(), before, "SHA256SUMS, signature and archive from the cache");
});

Deno.test("a read-ahead archive that fails its checksum is not cached, and the client still gets the error, not the bytes", async () => {
  const bad = new TextEncoder().encode("not the archive SHA256SUMS vouches for");
  await using t = await mirrorFixture({
    providers: [ALPHA],
    registry: {
      intercept: (req, server) =>
        server === "release" && new URL(req.url).pathname.endsWith("_darwin_arm64.zip")
          ? new Response(bad as BodyInit)
          : undefined,
    },
  });
  const a = t.fake.archive("alpha", "1.0.0", "darwin_arm64");
  const res = await t.get(`/v1/providers/${H}/example/alpha/1.0.0/download/darwin/arm64`);
  assertEquals(res.status, 200);
  await res.body?.cancel();
  await t.app.settle();
  await t.app.downloads.inflight({ hostname: H, namespace: "example", type: "alpha" }, "1.0.0", {
    os: "darwin",
    arch: "arm64",
  })?.done.catch(() => {});
  const tried = (r: RecordedRequest) => r.server === "release" && r.path.endsWith(".zip");
  assertEquals(t.fake.count(tried), 1, "the read-ahead tried");
  const stored = join(t.config.cacheDir, "packages", H, "example/alpha", a.filename);
  assert(!await exists(stored), "a tampered archive is never cached");
  const z = await t.get(`/${H}/example/alpha/${a.filename}`);
  // Verified before the last byte: a started answer is cut, never completed.
  const body = await bytesOf(z).then((b) => b, () => undefined);
  if (z.status === 200) assertEquals(body, undefined, "the transfer fails before its end");
  else assertEquals(z.status, 502);
  assert(!await exists(stored));
});

Deno.test("read-aheads in flight are bounded: many cold lists at once start at most READ_AHEAD_SLOTS", async () => {
  const N = 12;
  const providers = Array.from({ length: N }, (_, i) => ({
    namespace: "example",
    type: `p${i}`,
    versions: [{ version: "1.0.0", platforms: ["linux_amd64"] }],
  }));
  // Hold every download document until all lists have been answered.
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  await using t = await mirrorFixture({
    providers,
    registry: {
      intercept: async (req, server) => {
        if (server === "registry" && new URL(req.url).pathname.includes("/download/")) await held;
        return undefined;
      },
    },
  });
  const lists = await Promise.all(
    providers.map((p) => t.get(`/${H}/example/${p.type}/index.json`)),
  );
  for (const r of lists) {
    assertEquals(r.status, 200);
    await r.body?.cancel();
  }
  release();
  await t.app.settle();
  const docs = t.fake.count((r) => r.path.includes("/download/"));
  assertEquals(docs, READ_AHEAD_SLOTS, `${N} cold lists, ${READ_AHEAD_SLOTS} read-aheads`);
});

Deno.test("archive read-aheads hold their slot until the download ends: documents alone cannot start more than READ_AHEAD_SLOTS downloads", async () => {
  const many = [
    "linux_amd64",
    "linux_arm64",
    "darwin_amd64",
    "darwin_arm64",
    "windows_amd64",
    "freebsd_amd64",
  ];
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  const started = (r: RecordedRequest) =>
    r.server === "release" && r.path.startsWith("/files/") && r.path.endsWith(".zip");
  // deno-lint-ignore prefer-const
  let fake: { archives: Array<{ filename: string; bytes: Uint8Array }> } | undefined;
  await using t = await mirrorFixture({
    providers: [{
      namespace: "example",
      type: "wide",
      versions: [{ version: "1.0.0", platforms: many }],
    }],
    registry: {
      // Headers at once, the body only when released: each download is
      // under way (past its headers) and not finished.
      intercept: (req, server) => {
        const path = new URL(req.url).pathname;
        if (server !== "release" || !path.startsWith("/files/") || !path.endsWith(".zip")) {
          return undefined;
        }
        const a = fake!.archives.find((x) => path.endsWith(`/${x.filename}`))!;
        const body = new ReadableStream<Uint8Array>({
          async start(c) {
            await held;
            c.enqueue(a.bytes);
            c.close();
          },
        });
        return new Response(body, { headers: { "content-length": String(a.bytes.length) } });
      },
    },
  });
  fake = t.fake;
  for (const [n, pl] of many.entries()) {
    const [os, arch] = pl.split("_");
    const res = await t.get(`/v1/providers/${H}/example/wide/1.0.0/download/${os}/${arch}`);
    assertEquals(res.status, 200);
    await res.body?.cancel();
    // Let each read-ahead reach its archive before the next document.
    const want = Math.min(READ_AHEAD_SLOTS, n + 1);
    // Up to 10 s: a loaded CI machine may take a while; a pass returns at once.
    for (let i = 0; i < 2000 && t.fake.count(started) < want; i++) {
      await new Promise((r) => setTimeout(r, 5));
    }
  }
  assertEquals(t.fake.count(started), READ_AHEAD_SLOTS);
  release();
  await t.app.settle();
  assertEquals(t.fake.count(started), READ_AHEAD_SLOTS, "the skipped ones were not queued");
});
