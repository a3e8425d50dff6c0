/**
 * The S3 tier under operations (Ceph RGW, tests/_rgw.ts): the bucket going
 * away and coming back, wrong credentials, the start-up sweep of abandoned
 * multipart uploads, and an archive large enough for a multipart upload
 * going through the whole fleet path.
 * @module
 */
import { assert, assertEquals } from "../lib/deps/assert.ts";
import { startFakeRegistry } from "./fake_registry.ts";
import { bytesOf, makeTestApp, sha256Hex, tempDir, tempLeftovers } from "./_helpers.ts";
import {
  bucketWithOneArchive,
  listBucket,
  listUploads,
  newBucket,
  randomBytes,
  rgw,
  rgwClient,
  skipUnlessRgw,
  startGateway,
  storageConfig,
} from "./_rgw.ts";

const ignore = skipUnlessRgw("S3 storage tier operations");
const H = "registry.terraform.io";
const ALPHA = [{
  namespace: "example",
  type: "alpha",
  versions: [{ version: "1.0.0", platforms: ["linux_amd64", "darwin_arm64", "windows_amd64"] }],
}];
const path = (file: string) => `/${H}/example/alpha/${file}`;
const key = (file: string) => `m/packages/${H}/example/alpha/${file}`;

const storage = storageConfig;

Deno.test({
  name:
    "S3 tier: bucket down then back → readyz degraded then ready, each logged once; storing to the bucket resumes",
  ignore,
  async fn() {
    await using fake = await startFakeRegistry({ providers: ALPHA });
    await using dir = await tempDir();
    const bucket = await newBucket(rgw!);
    const gw = await startGateway(rgw!);
    let clock = Date.now();
    try {
      await using t = await makeTestApp(
        fake,
        dir.path,
        storage(bucket, { endpoint: gw.endpoint }),
        { now: () => clock },
      );
      const [linux, darwin, windows] = ["linux_amd64", "darwin_arm64", "windows_amd64"].map((p) =>
        fake.archive("alpha", "1.0.0", p)
      );
      assertEquals(sha256Hex(await bytesOf(await t.get(path(linux!.filename)))), linux!.sha256);
      await t.app.settle();

      await gw.stop();
      clock += 2_000;
      const down = await (await t.get("/-/readyz")).json();
      assertEquals([down.status, down.storage.reachable], ["degraded", false]);
      assertEquals(sha256Hex(await bytesOf(await t.get(path(darwin!.filename)))), darwin!.sha256);
      await t.app.settle();

      await gw.restart();
      clock += 6_000; // past the retry pause and the readiness reuse
      const back = await t.get("/-/readyz");
      assertEquals(back.status, 200);
      const body = await back.json();
      assertEquals([body.status, body.storage.reachable], ["ready", true]);
      assertEquals(sha256Hex(await bytesOf(await t.get(path(windows!.filename)))), windows!.sha256);
      await t.app.settle();

      const keys = (await listBucket(rgw!, bucket, "m/packages/")).map((o) => o.key).sort();
      assertEquals(keys, [key(linux!.filename), key(windows!.filename)].sort());
      const count = (s: string) => t.log.lines.filter((l) => l.includes(s)).length;
      assertEquals(count("storage bucket unreachable"), 1);
      assertEquals(count("storage bucket reachable again"), 1);
    } finally {
      await gw.stop();
    }
  },
});

Deno.test({
  name:
    "S3 tier: wrong credentials → readyz degraded naming the refusal; archives still served and kept locally",
  ignore,
  async fn() {
    await using fake = await startFakeRegistry({ providers: ALPHA });
    await using dir = await tempDir();
    const bucket = await newBucket(rgw!);
    await using t = await makeTestApp(
      fake,
      dir.path,
      storage(bucket, {
        credentials: { accessKeyId: rgw!.accessKeyId, secretAccessKey: "not-the-secret" },
      }),
    );
    const linux = fake.archive("alpha", "1.0.0", "linux_amd64");
    const r = await t.get(path(linux.filename));
    assertEquals(r.status, 200);
    assertEquals(sha256Hex(await bytesOf(r)), linux.sha256);
    await t.app.settle();
    const ready = await t.get("/-/readyz");
    assertEquals(ready.status, 200);
    const body = await ready.json();
    assertEquals(body.status, "degraded");
    assert(/403/.test(body.storage.reason), body.storage.reason);
    assertEquals(await listBucket(rgw!, bucket), []);
    assertEquals(
      sha256Hex(await Deno.readFile(`${dir.path}/packages/${H}/example/alpha/${linux.filename}`)),
      linux.sha256,
    );
  },
});

Deno.test({
  name: "S3 tier: start-up aborts multipart uploads older than storage.abandonedUploadAge",
  ignore,
  async fn() {
    await using dir = await tempDir();
    const bucket = await newBucket(rgw!);
    const c = rgwClient(rgw!);
    const started = await c.fetch(`${rgw!.endpoint}/${bucket}/m/packages/x/y/z/a.zip?uploads`, {
      method: "POST",
    });
    assertEquals(started.status, 200, await started.text());
    // One outside the prefix belongs to someone else and stays.
    const other = await c.fetch(`${rgw!.endpoint}/${bucket}/other/a.zip?uploads`, {
      method: "POST",
    });
    assertEquals(other.status, 200, await other.text());
    await new Promise((r) => setTimeout(r, 2_100)); // RGW's Initiated has second precision
    await using t = await makeTestApp(
      undefined,
      dir.path,
      storage(bucket, { abandonedUploadAge: "1s" }),
    );
    await t.app.settle();
    assertEquals(await listUploads(rgw!, bucket), ["other/a.zip"]);
    assert(t.log.lines.some((l) => l.includes("aborted abandoned multipart uploads")));
  },
});

Deno.test({
  name:
    "S3 tier: an archive above storage.multipartThreshold goes up in parts and comes back exact on an empty replica",
  ignore,
  async fn() {
    const big = randomBytes(11 * 2 ** 20 + 333);
    const over = { multipartThreshold: "6MiB", partSize: "5MiB" };
    await using seeded = await bucketWithOneArchive(big, over);
    const { fake, bucket, linux } = seeded;
    assertEquals(linux.sha256, sha256Hex(big));
    await using b = await tempDir();
    assertEquals(await listBucket(rgw!, bucket, "m/packages/"), [{
      key: key(linux.filename),
      size: big.length,
    }]);
    // A multipart object's ETag says how many parts it has.
    const head = await rgwClient(rgw!).fetch(`${rgw!.endpoint}/${bucket}/${key(linux.filename)}`, {
      method: "HEAD",
    });
    assertEquals(head.headers.get("etag")?.replaceAll('"', "").split("-")[1], "3");
    await using second = await makeTestApp(fake, b.path, storage(bucket, over));
    const r = await second.get(path(linux.filename));
    assertEquals(sha256Hex(await bytesOf(r)), linux.sha256);
    await second.app.settle();
    assertEquals(
      sha256Hex(await Deno.readFile(`${b.path}/packages/${H}/example/alpha/${linux.filename}`)),
      linux.sha256,
    );
  },
});

Deno.test({
  name: "S3 tier: a bucket object altered past the fingerprint is never kept on the local tier",
  ignore,
  async fn() {
    const good = randomBytes(400 * 1024);
    await using seeded = await bucketWithOneArchive(good);
    const { fake, bucket, linux } = seeded;
    await using b = await tempDir();
    // Same size, same head and tail (the cheap fingerprint), one byte changed
    // in the middle, the recorded sha256 kept.
    const bad = good.slice();
    bad[200 * 1024] = bad[200 * 1024]! ^ 0xff;
    const put = await rgwClient(rgw!).fetch(`${rgw!.endpoint}/${bucket}/${key(linux.filename)}`, {
      method: "PUT",
      body: bad,
      headers: { "x-amz-meta-sha256": linux.sha256 },
    });
    assertEquals(put.status, 200, await put.text());
    await using second = await makeTestApp(fake, b.path, storage(bucket));
    // The transfer is cut before its last bytes (tests/s3_red_team_test.ts).
    await bytesOf(await second.get(path(linux.filename))).catch(() => undefined);
    await second.app.settle();
    const kept = await Deno.readFile(`${b.path}/packages/${H}/example/alpha/${linux.filename}`)
      .catch(() => undefined);
    assertEquals(kept, undefined, "the altered bytes were not kept");
    assert(second.log.lines.some((l) => l.includes("does not hash to the sha256 recorded")));
  },
});

Deno.test({
  name:
    "S3 tier: the bucket copied to a folder (like `aws s3 sync`) is a cache directory an offline Repoxy serves",
  ignore,
  async fn() {
    await using fake = await startFakeRegistry({ providers: ALPHA });
    await using a = await tempDir();
    await using copy = await tempDir();
    const bucket = await newBucket(rgw!);
    const linux = fake.archive("alpha", "1.0.0", "linux_amd64");
    {
      await using t = await makeTestApp(fake, a.path, storage(bucket));
      assertEquals(sha256Hex(await bytesOf(await t.get(path(linux.filename)))), linux.sha256);
      await t.app.settle();
    }
    const c = rgwClient(rgw!);
    for (const o of await listBucket(rgw!, bucket, "m/")) {
      const to = `${copy.path}/${o.key.slice("m/".length)}`;
      await Deno.mkdir(to.slice(0, to.lastIndexOf("/")), { recursive: true });
      const r = await c.fetch(`${rgw!.endpoint}/${bucket}/${o.key}`);
      await Deno.writeFile(to, await bytesOf(r));
    }
    await using offline = await makeTestApp(undefined, copy.path, {
      offline: true,
      upstreams: { [H]: { url: `https://${H}` } },
    });
    const r = await offline.get(path(linux.filename));
    assertEquals(r.status, 200);
    assertEquals(await bytesOf(r), linux.bytes);
    const index = await offline.get(`/${H}/example/alpha/index.json`);
    assertEquals(await index.json(), { versions: { "1.0.0": {} } });
  },
});

Deno.test({
  name:
    "S3 tier: an archive larger than the replica's maxCacheSize streams from the bucket, never filling its disk",
  ignore,
  async fn() {
    const big = randomBytes(400 * 1024);
    await using seeded = await bucketWithOneArchive(big);
    const { fake, bucket, linux } = seeded;
    await using b = await tempDir();
    await using small = await makeTestApp(fake, b.path, {
      ...storage(bucket),
      maxCacheSize: "300KiB",
    });
    const r = await small.get(path(linux.filename));
    assertEquals(r.status, 200);
    assertEquals(await bytesOf(r), big);
    await small.app.settle();
    assertEquals(
      await Deno.stat(`${b.path}/packages/${H}/example/alpha/${linux.filename}`).then(
        () => true,
        () => false,
      ),
      false,
    );
    assertEquals(await tempLeftovers(b.path), []);
  },
});

Deno.test({
  name:
    "S3 tier: no credentials anywhere → the replica serves from upstream and disk, readyz names the missing credentials",
  ignore,
  async fn() {
    await using fake = await startFakeRegistry({ providers: ALPHA });
    await using dir = await tempDir();
    const bucket = await newBucket(rgw!);
    // No source of the chain may answer: this process's environment says so.
    const vars: Record<string, string | undefined> = {
      AWS_EC2_METADATA_DISABLED: "true",
      AWS_SHARED_CREDENTIALS_FILE: `${dir.path}/no-such-file`,
      AWS_ACCESS_KEY_ID: undefined,
      AWS_SECRET_ACCESS_KEY: undefined,
      AWS_WEB_IDENTITY_TOKEN_FILE: undefined,
      AWS_CONTAINER_CREDENTIALS_FULL_URI: undefined,
      AWS_CONTAINER_CREDENTIALS_RELATIVE_URI: undefined,
    };
    const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, Deno.env.get(k)]));
    const apply = (v: Record<string, string | undefined>) => {
      for (const [k, x] of Object.entries(v)) {
        x === undefined ? Deno.env.delete(k) : Deno.env.set(k, x);
      }
    };
    apply(vars);
    try {
      const { credentials: _none, ...section } = storage(bucket).storage;
      await using t = await makeTestApp(fake, dir.path, { storage: section });
      const linux = fake.archive("alpha", "1.0.0", "linux_amd64");
      const r = await t.get(path(linux.filename));
      assertEquals(r.status, 200);
      assertEquals(sha256Hex(await bytesOf(r)), linux.sha256);
      await t.app.settle();
      const body = await (await t.get("/-/readyz")).json();
      assertEquals(body.status, "degraded");
      assert(/no S3 credentials found/.test(body.storage.reason), body.storage.reason);
      assertEquals(await listBucket(rgw!, bucket), []);
    } finally {
      apply(saved);
    }
  },
});
