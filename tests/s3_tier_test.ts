/**
 * The local disk as a read-through tier in front of a real bucket (Ceph
 * RGW, tests/_rgw.ts): a replica with an empty disk serves a warm archive
 * from the bucket (exact bytes, no upstream fetch) and fills its disk;
 * ranges work from the bucket; a bucket outage leaves the local tier serving
 * and `/-/readyz` degraded; redirect mode answers a presigned URL that gives
 * the exact bytes; an archive failing its checksum never reaches the bucket.
 * @module
 */
import { assert, assertEquals } from "../lib/deps/assert.ts";
import { startFakeRegistry } from "./fake_registry.ts";
import { bytesOf, makeTestApp, sha256Hex, tempDir, tempLeftovers } from "./_helpers.ts";
import { listBucket, newBucket, rgw, skipUnlessRgw, startGateway, storageConfig } from "./_rgw.ts";

const ignore = skipUnlessRgw("S3 storage tier");
const H = "registry.terraform.io";
const ALPHA = [{
  namespace: "example",
  type: "alpha",
  versions: [{ version: "1.0.0", platforms: ["linux_amd64", "darwin_arm64"] }],
}];
const FILE = "terraform-provider-alpha_1.0.0_linux_amd64.zip";
const ZIP = `/${H}/example/alpha/${FILE}`;
const KEY = `m/packages/${H}/example/alpha/${FILE}`;

const storage = storageConfig;

const zipFetches = (fake: { count(m: (r: { path: string }) => boolean): number }) =>
  fake.count((r) => r.path.startsWith("/files/") && r.path.endsWith(".zip"));

Deno.test({
  name:
    "S3 tier: a replica with an empty disk serves a warm archive from the bucket and fills its disk",
  ignore,
  async fn() {
    await using fake = await startFakeRegistry({ providers: ALPHA });
    await using a = await tempDir();
    await using b = await tempDir();
    await using c = await tempDir();
    const bucket = await newBucket(rgw!);
    const want = fake.archive("alpha", "1.0.0", "linux_amd64");
    {
      await using first = await makeTestApp(fake, a.path, storage(bucket));
      const r = await first.get(ZIP);
      assertEquals(r.status, 200);
      assertEquals(sha256Hex(await bytesOf(r)), want.sha256);
      await first.app.settle();
    }
    assertEquals(zipFetches(fake), 1);
    const listed = await listBucket(rgw!, bucket);
    assert(
      listed.some((o) => o.key === KEY && o.size === want.bytes.length),
      JSON.stringify(listed),
    );
    assert(listed.some((o) => o.key.startsWith("m/refs/")), "refs are shared through the bucket");

    await using second = await makeTestApp(fake, b.path, storage(bucket));
    const r = await second.get(ZIP);
    assertEquals(r.status, 200);
    assertEquals(r.headers.get("x-repoxy-cache"), "hit");
    assertEquals(await bytesOf(r), want.bytes);
    await second.app.settle();
    assertEquals(zipFetches(fake), 1, "served from the bucket, not the upstream");
    const local = await Deno.readFile(`${b.path}/packages/${H}/example/alpha/${FILE}`);
    assertEquals(sha256Hex(local), want.sha256, "the local tier was filled");
    assertEquals(second.app.inventory.totalBytes, want.bytes.length, "the inventory knows it");

    // A range from the bucket on a third empty replica: exact bytes; the
    // local tier holds the whole verified archive or nothing, never a part.
    await using third = await makeTestApp(fake, c.path, storage(bucket));
    const part = await third.get(ZIP, { headers: { range: "bytes=100-1099" } });
    assertEquals(part.status, 206);
    assertEquals(await bytesOf(part), want.bytes.subarray(100, 1100));
    await third.app.settle();
    assertEquals(zipFetches(fake), 1);
    const kept = await Deno.readFile(`${c.path}/packages/${H}/example/alpha/${FILE}`).catch(() =>
      undefined
    );
    if (kept) assertEquals(sha256Hex(kept), want.sha256);
    assertEquals(await tempLeftovers(c.path), []);
  },
});

Deno.test({
  name: "S3 tier: bucket down → the local tier still serves, readyz says degraded, the log says so",
  ignore,
  async fn() {
    await using fake = await startFakeRegistry({ providers: ALPHA });
    await using dir = await tempDir();
    const bucket = await newBucket(rgw!);
    const gw = await startGateway(rgw!);
    try {
      await using t = await makeTestApp(fake, dir.path, storage(bucket, { endpoint: gw.endpoint }));
      const up = await t.get("/-/readyz");
      assertEquals(up.status, 200);
      const upBody = await up.json();
      assertEquals(upBody.status, "ready");
      assertEquals(upBody.storage.reachable, true);
      const want = fake.archive("alpha", "1.0.0", "linux_amd64");
      assertEquals(sha256Hex(await bytesOf(await t.get(ZIP))), want.sha256);
      await t.app.settle();
      assert((await listBucket(rgw!, bucket)).some((o) => o.key === KEY));

      await gw.stop();
      const hit = await t.get(ZIP);
      assertEquals(hit.status, 200);
      assertEquals(await bytesOf(hit), want.bytes);
      // A new archive still comes from the upstream and is kept locally.
      const other = fake.archive("alpha", "1.0.0", "darwin_arm64");
      const miss = await t.get(`/${H}/example/alpha/${other.filename}`);
      assertEquals(sha256Hex(await bytesOf(miss)), other.sha256);
      await t.app.settle();
      assertEquals(
        sha256Hex(await Deno.readFile(`${dir.path}/packages/${H}/example/alpha/${other.filename}`)),
        other.sha256,
      );
      const down = await t.get("/-/readyz");
      assertEquals(down.status, 200);
      const body = await down.json();
      assertEquals(body.status, "degraded");
      assertEquals(body.storage.reachable, false);
      assert(typeof body.storage.reason === "string" && body.storage.reason.length > 0);
      assertEquals(
        t.log.lines.filter((l) => l.includes("storage bucket unreachable")).length,
        1,
        "said once, not per request",
      );
    } finally {
      await gw.stop();
    }
  },
});

Deno.test({
  name: "S3 tier: storage.redirect answers 302 to a presigned GET that gives the exact bytes",
  ignore,
  async fn() {
    await using fake = await startFakeRegistry({ providers: ALPHA });
    await using a = await tempDir();
    await using b = await tempDir();
    const bucket = await newBucket(rgw!);
    const want = fake.archive("alpha", "1.0.0", "linux_amd64");
    {
      await using first = await makeTestApp(fake, a.path, storage(bucket, { redirect: true }));
      assertEquals(sha256Hex(await bytesOf(await first.get(ZIP))), want.sha256);
      await first.app.settle();
    }
    await using second = await makeTestApp(fake, b.path, storage(bucket, { redirect: true }));
    const r = await second.get(ZIP);
    assertEquals(r.status, 302);
    await r.body?.cancel();
    const location = r.headers.get("location")!;
    assert(location.startsWith(`${rgw!.endpoint}/${bucket}/${KEY}?`), location);
    assert(new URL(location).searchParams.get("X-Amz-Expires") === "300");
    const got = await fetch(location);
    assertEquals(got.status, 200);
    assertEquals(await bytesOf(got), want.bytes);
    assertEquals(zipFetches(fake), 1);
  },
});

Deno.test({
  name: "S3 tier: an archive that fails its checksum leaves nothing under packages/ in the bucket",
  ignore,
  async fn() {
    await using fake = await startFakeRegistry({
      providers: ALPHA,
      intercept: async (req, server) => {
        if (server !== "release" || !new URL(req.url).pathname.endsWith(FILE)) return undefined;
        const good = fake.archive("alpha", "1.0.0", "linux_amd64").bytes;
        const bad = good.slice();
        bad[bad.length >> 1] = bad[bad.length >> 1]! ^ 0xff;
        await Promise.resolve();
        return new Response(bad, { headers: { "content-type": "application/zip" } });
      },
    });
    await using dir = await tempDir();
    const bucket = await newBucket(rgw!);
    await using t = await makeTestApp(fake, dir.path, storage(bucket));
    const r = await t.get(ZIP);
    await r.body?.cancel().catch(() => {});
    await t.app.settle();
    assertEquals(await listBucket(rgw!, bucket, "m/packages/"), []);
  },
});

Deno.test({
  name:
    "S3 tier: 8 concurrent clients of an empty replica get exact bytes from the bucket; one fill, no leftovers",
  ignore,
  async fn() {
    await using fake = await startFakeRegistry({ providers: ALPHA });
    await using a = await tempDir();
    await using b = await tempDir();
    const bucket = await newBucket(rgw!);
    const want = fake.archive("alpha", "1.0.0", "linux_amd64");
    {
      await using first = await makeTestApp(fake, a.path, storage(bucket));
      await bytesOf(await first.get(ZIP));
      await first.app.settle();
    }
    await using second = await makeTestApp(fake, b.path, storage(bucket));
    const got = await Promise.all(
      Array.from({ length: 8 }, async () => {
        const r = await second.get(ZIP);
        return { status: r.status, sha: sha256Hex(await bytesOf(r)) };
      }),
    );
    assertEquals(got, Array.from({ length: 8 }, () => ({ status: 200, sha: want.sha256 })));
    await second.app.settle();
    assertEquals(zipFetches(fake), 1);
    assertEquals(
      sha256Hex(await Deno.readFile(`${b.path}/packages/${H}/example/alpha/${FILE}`)),
      want.sha256,
    );
    assertEquals(await tempLeftovers(b.path), []);
    assertEquals(second.app.inventory.totalBytes, want.bytes.length, "counted once");
  },
});
