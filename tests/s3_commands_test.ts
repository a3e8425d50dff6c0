/**
 * The maintenance commands on the shared bucket (Ceph RGW, tests/_rgw.ts):
 * each runs from a host whose local cache is empty, so what it does can only
 * come from the bucket — `verify` re-hashes bucket objects and quarantines a
 * mismatch, `prune` applies `storage.retention` (never to a leased archive),
 * `export` writes what the fleet holds, `import` uploads verified archives,
 * `warm` fills the local tier from the bucket without fetching again.
 * @module
 */
import { assert, assertEquals, assertMatch } from "../lib/deps/assert.ts";
import { join } from "../lib/deps/path.ts";
import { exportCommand } from "../lib/commands/export.ts";
import { importCommand } from "../lib/commands/import.ts";
import { pruneCommand } from "../lib/commands/prune.ts";
import { verifyCommand } from "../lib/commands/verify.ts";
import { warmCommand } from "../lib/commands/warm.ts";
import { type FakeArchive, type FakeRegistry, startFakeRegistry } from "./fake_registry.ts";
import { bytesOf, makeTestApp, sha256Hex, tempDir } from "./_helpers.ts";
import { captureIo, testContext, writeFakeConfig } from "./_cli.ts";
import { makeProviderZip } from "./_zip.ts";
import { listBucket, newBucket, rgw, rgwClient, skipUnlessRgw, storageConfig } from "./_rgw.ts";

const ignore = skipUnlessRgw("commands on the S3 bucket");
const H = "registry.terraform.io";
const PLATFORMS = ["linux_amd64", "darwin_arm64", "windows_amd64"];
const ALPHA = [{
  namespace: "example",
  type: "alpha",
  versions: [{ version: "1.0.0", platforms: PLATFORMS }],
}];
const path = (file: string) => `/${H}/example/alpha/${file}`;
const key = (file: string) => `m/packages/${H}/example/alpha/${file}`;
// Archive bytes sent by the fake's release server (not its redirects).
const zips = (f: { server: string; path: string }) =>
  f.server === "release" && f.path.endsWith(".zip") && !f.path.startsWith("/redirect/");

/**
 * How many archive fetches from upstream a fresh replica on `bucket` (cache
 * dir `cacheDir`) makes to serve `f` whole, checked against its sha256.
 */
async function upstreamFetchesToServe(
  fake: FakeRegistry,
  cacheDir: string,
  bucket: string,
  f: FakeArchive,
): Promise<number> {
  const before = fake.count(zips);
  await using t = await makeTestApp(fake, cacheDir, storageConfig(bucket));
  assertEquals(sha256Hex(await bytesOf(await t.get(path(f.filename)))), f.sha256);
  await t.app.settle();
  return fake.count(zips) - before;
}

async function bucketObject(bucket: string, k: string): Promise<Response> {
  return await rgwClient(rgw!).fetch(`${rgw!.endpoint}/${bucket}/${k}`);
}

async function etagOf(bucket: string, k: string): Promise<string | null> {
  const r = await rgwClient(rgw!).fetch(`${rgw!.endpoint}/${bucket}/${k}`, { method: "HEAD" });
  await r.body?.cancel();
  return r.status === 200 ? r.headers.get("etag") : null;
}

async function putObject(
  bucket: string,
  k: string,
  body: Uint8Array<ArrayBuffer> | string,
  headers = {},
) {
  const r = await rgwClient(rgw!).fetch(`${rgw!.endpoint}/${bucket}/${k}`, {
    method: "PUT",
    body,
    headers,
  });
  await r.body?.cancel();
  assertEquals(r.status, 200, `PUT ${k}`);
}

Deno.test({
  name:
    "S3 commands: verify re-hashes BUCKET objects from an empty host, quarantines the bad one under quarantine/, exit 1; the next request refetches",
  ignore,
  async fn() {
    await using fake = await startFakeRegistry({ providers: ALPHA });
    await using dir = await tempDir();
    const bucket = await newBucket(rgw!);
    const [linux, darwin] = PLATFORMS.map((p) => fake.archive("alpha", "1.0.0", p));
    {
      await using a = await makeTestApp(fake, join(dir.path, "a"), storageConfig(bucket));
      for (const f of [linux!, darwin!]) {
        assertEquals(sha256Hex(await bytesOf(await a.get(path(f.filename)))), f.sha256);
      }
      await a.app.settle();
    }
    // Bit rot in the bucket: other bytes under the key, the upload's sha256 kept.
    const bad = new Uint8Array(linux!.bytes);
    bad[100] = bad[100]! ^ 0xff;
    await putObject(bucket, key(linux!.filename), bad, { "x-amz-meta-sha256": linux!.sha256 });

    const { config } = await writeFakeConfig(dir.path, fake, {
      cacheDir: join(dir.path, "b"),
      ...storageConfig(bucket),
    });
    const io = captureIo();
    assertEquals(await verifyCommand.run(["-c", config], testContext(io)), 1);
    const err = io.errLines.join("\n");
    assertMatch(
      err,
      /MISMATCH in the bucket registry\.terraform\.io\/example\/alpha 1\.0\.0 linux_amd64/,
    );
    assertMatch(
      io.outLines.join("\n"),
      /2 archive\(s\) .* checked in s3:\/\/.*: 1 ok, 1 quarantined/,
    );

    const keys = (await listBucket(rgw!, bucket)).map((o) => o.key);
    assert(!keys.includes(key(linux!.filename)), "no bad object stays under packages/");
    assert(keys.includes(key(darwin!.filename)));
    const q = keys.filter((k) =>
      k.startsWith(`m/quarantine/${H}/example/alpha/${linux!.filename}.`)
    );
    assertEquals(q.length, 2, q.join(", ")); // the object and its note
    const moved = q.find((k) => !k.endsWith(".json"))!;
    assertEquals(sha256Hex(await bytesOf(await bucketObject(bucket, moved))), sha256Hex(bad));
    const note = await (await bucketObject(bucket, `${moved}.json`)).json();
    assertEquals(note.recorded.sha256, linux!.sha256);

    // A second run finds nothing wrong.
    const io2 = captureIo();
    assertEquals(await verifyCommand.run(["-c", config], testContext(io2)), 0);

    // The fleet fetches a good copy again.
    assertEquals(await upstreamFetchesToServe(fake, join(dir.path, "c"), bucket, linux!), 1);
  },
});

Deno.test({
  name:
    "S3 commands: prune applies storage.retention.maxSize by fleet recency (access markers), skips a leased archive, exit 1 while over",
  ignore,
  async fn() {
    await using fake = await startFakeRegistry({ providers: ALPHA });
    await using dir = await tempDir();
    const bucket = await newBucket(rgw!);
    const [a, b, c] = PLATFORMS.map((p) => fake.archive("alpha", "1.0.0", p));
    {
      await using app = await makeTestApp(fake, join(dir.path, "a"), storageConfig(bucket));
      for (const f of [a!, b!, c!]) await bytesOf(await app.get(path(f.filename)));
      await app.app.settle();
    }
    // No use recorded at upload: the upload's Last-Modified is the use.
    assertEquals(await listBucket(rgw!, bucket, "m/access/"), []);
    // a is used later than every upload (the bucket's clock: a second later),
    // by another replica, which records it once.
    await new Promise((r) => setTimeout(r, 1_100));
    const mark = `m/access/${H}/example/alpha/${a!.filename}`;
    {
      await using other = await makeTestApp(fake, join(dir.path, "r2"), storageConfig(bucket));
      assertEquals(sha256Hex(await bytesOf(await other.get(path(a!.filename)))), a!.sha256);
      await other.app.settle();
      const first = await etagOf(bucket, mark);
      assert(first, "the use is recorded in the bucket");
      await bytesOf(await other.get(path(a!.filename))); // now from its local tier
      await other.app.settle();
      assertEquals(await etagOf(bucket, mark), first, "once a day");
    }
    // b is being fetched by some replica right now.
    await putObject(bucket, `m/leases/${H}/example/alpha/${b!.filename}.lease`, "{}\n");

    // Without a's use, a would go first (uploaded first, or tied and sorted first).
    const maxSize = a!.bytes.length + b!.bytes.length;
    const { config } = await writeFakeConfig(dir.path, fake, {
      cacheDir: join(dir.path, "b"),
      ...storageConfig(bucket, { retention: { maxSize } }),
    });
    const dry = captureIo();
    assertEquals(await pruneCommand.run(["-c", config, "--dry-run"], testContext(dry)), 0);
    assertMatch(dry.outLines.join("\n"), new RegExp(`would evict .*${c!.filename}`));
    assertEquals((await listBucket(rgw!, bucket, "m/packages/")).length, 3);

    const io = captureIo();
    assertEquals(await pruneCommand.run(["-c", config], testContext(io)), 0);
    assertMatch(io.outLines.join("\n"), new RegExp(`evicted .*${c!.filename}`));
    assertMatch(io.errLines.join("\n"), new RegExp(`skipped .*${b!.filename}: a replica holds`));
    const left = (await listBucket(rgw!, bucket, "m/packages/")).map((o) => o.key).sort();
    assertEquals(left, [key(a!.filename), key(b!.filename)].sort());
    // The evicted archive's marker goes with it; a's stays.
    const marks = (await listBucket(rgw!, bucket, "m/access/")).map((o) => o.key);
    assert(!marks.some((k) => k.endsWith(c!.filename)), marks.join(", "));
    assert(marks.some((k) => k.endsWith(a!.filename)), marks.join(", "));

    // Tighter than the leased archive alone: still over, exit 1, b kept.
    const tight = join(dir.path, "tight");
    await Deno.mkdir(tight);
    const { config: config2 } = await writeFakeConfig(tight, fake, {
      cacheDir: join(dir.path, "b"),
      ...storageConfig(bucket, { retention: { maxSize: 1 } }),
    });
    const io2 = captureIo();
    assertEquals(await pruneCommand.run(["-c", config2], testContext(io2)), 1);
    assertMatch(io2.errLines.join("\n"), /the bucket is still over/);
    assertEquals(
      (await listBucket(rgw!, bucket, "m/packages/")).map((o) => o.key),
      [key(b!.filename)],
    );
  },
});

Deno.test({
  name:
    "S3 commands: export from an empty host writes what the bucket holds; import into another bucket uploads it; a replica there serves it with no upstream fetch",
  ignore,
  async fn() {
    await using fake = await startFakeRegistry({ providers: ALPHA });
    await using dir = await tempDir();
    const bucket = await newBucket(rgw!);
    const [linux, darwin] = PLATFORMS.map((p) => fake.archive("alpha", "1.0.0", p));
    {
      await using a = await makeTestApp(fake, join(dir.path, "a"), storageConfig(bucket));
      for (const f of [linux!, darwin!]) await bytesOf(await a.get(path(f.filename)));
      await a.app.settle();
    }
    const out = join(dir.path, "export");
    const { config } = await writeFakeConfig(dir.path, fake, {
      cacheDir: join(dir.path, "b"),
      ...storageConfig(bucket),
    });
    const io = captureIo();
    assertEquals(
      await exportCommand.run(["-c", config, out], testContext(io)),
      0,
      io.errLines.join("\n"),
    );
    for (const f of [linux!, darwin!]) {
      const got = await Deno.readFile(join(out, H, "example", "alpha", f.filename));
      assertEquals(sha256Hex(got), f.sha256);
    }
    const index = JSON.parse(
      await Deno.readTextFile(join(out, H, "example", "alpha", "index.json")),
    );
    assertEquals(Object.keys(index.versions), ["1.0.0"]);
    // The export did not fill this host's local tier.
    assertEquals([...Deno.readDirSync(join(dir.path, "b", "packages"))].length, 0);

    const bucket2 = await newBucket(rgw!);
    const cfg2 = join(dir.path, "cfg2");
    await Deno.mkdir(cfg2);
    const { config: config2 } = await writeFakeConfig(cfg2, fake, {
      cacheDir: join(dir.path, "c"),
      ...storageConfig(bucket2),
    });
    const io2 = captureIo();
    assertEquals(
      await importCommand.run(["-c", config2, out], testContext(io2)),
      0,
      io2.errLines.join("\n"),
    );
    const there = await listBucket(rgw!, bucket2, "m/packages/");
    assertEquals(
      there.map((o) => [o.key, o.size]).sort(),
      [linux!, darwin!].map((f) => [key(f.filename), f.bytes.length]).sort(),
    );
    const head = await rgwClient(rgw!).fetch(
      `${rgw!.endpoint}/${bucket2}/${key(linux!.filename)}`,
      { method: "HEAD" },
    );
    assertEquals(head.headers.get("x-amz-meta-sha256"), linux!.sha256);

    assertEquals(await upstreamFetchesToServe(fake, join(dir.path, "d"), bucket2, darwin!), 0);
  },
});

Deno.test({
  name:
    "S3 commands: warm fills the bucket and the local tier; warm on a second host copies from the bucket, no upstream fetch",
  ignore,
  async fn() {
    // Larger than the fingerprint's head and tail: opening it reads only part of it.
    const noise = new Uint8Array(300 * 1024);
    for (let i = 0; i < noise.length; i += 65536) {
      crypto.getRandomValues(noise.subarray(i, i + 65536));
    }
    const big = await makeProviderZip("alpha", "1.0.0", "linux_amd64", [
      { name: "data.bin", data: noise },
    ]);
    await using fake = await startFakeRegistry({ providers: ALPHA, zipOverride: () => big });
    await using dir = await tempDir();
    const bucket = await newBucket(rgw!);
    const linux = fake.archive("alpha", "1.0.0", "linux_amd64");
    const localFile = (cache: string) =>
      join(cache, "packages", H, "example", "alpha", linux.filename);
    const run = async (cacheDir: string) => {
      const sub = join(dir.path, `cfg-${cacheDir}`);
      await Deno.mkdir(sub);
      const { config } = await writeFakeConfig(sub, fake, {
        cacheDir: join(dir.path, cacheDir),
        ...storageConfig(bucket),
      });
      const io = captureIo();
      const code = await warmCommand.run(
        ["-c", config, "-p", "linux_amd64", "example/alpha@1.0.0"],
        testContext(io),
      );
      return { code, out: io.outLines.join("\n"), err: io.errLines.join("\n") };
    };
    const first = await run("a");
    assertEquals(first.code, 0);
    assertMatch(first.out, /1 fetched/);
    assertEquals(
      (await listBucket(rgw!, bucket, "m/packages/")).map((o) => o.key),
      [key(linux.filename)],
    );
    assertEquals(sha256Hex(await Deno.readFile(localFile(join(dir.path, "a")))), linux.sha256);

    const before = fake.count(zips);
    const second = await run("b");
    assertEquals(second.code, 0);
    assertMatch(second.out, /0 fetched .* 1 already cached/, second.err);
    assertEquals(fake.count(zips) - before, 0);
    const filled = await Deno.readFile(localFile(join(dir.path, "b"))).catch(() => undefined);
    assert(filled, `not filled: ${second.err}`);
    assertEquals(sha256Hex(filled), linux.sha256);
  },
});

Deno.test("bucket retention: maxAge evicts archives unused for longer (bucket clock), never one with a live lease", async () => {
  const day = 86_400_000;
  const now = Date.parse("2026-06-01T00:00:00Z");
  const obj = (k: string, ageDays: number, size = 10) => ({
    key: k,
    size,
    mtime: new Date(now - ageDays * day),
    atime: null,
  });
  const objects: Record<string, ReturnType<typeof obj>[]> = {
    "packages/": [
      obj(`packages/${H}/example/alpha/terraform-provider-alpha_1.0.0_linux_amd64.zip`, 40),
      obj(`packages/${H}/example/alpha/terraform-provider-alpha_1.0.0_darwin_arm64.zip`, 40),
      obj(`packages/${H}/example/alpha/terraform-provider-alpha_1.0.0_windows_amd64.zip`, 40),
    ],
    // linux was used 2 days ago; windows is leased.
    "access/": [obj(`access/${H}/example/alpha/terraform-provider-alpha_1.0.0_linux_amd64.zip`, 2)],
    "leases/": [
      obj(`leases/${H}/example/alpha/terraform-provider-alpha_1.0.0_windows_amd64.zip.lease`, 0),
      // A holder that died two days ago protects nothing.
      obj(`leases/${H}/example/alpha/terraform-provider-alpha_1.0.0_darwin_arm64.zip.lease`, 2),
    ],
  };
  const deleted: string[] = [];
  const fakeBucket = {
    async *list(prefix: string) {
      for (const o of objects[prefix] ?? []) yield o;
    },
    delete(k: string) {
      deleted.push(k);
      return Promise.resolve(true);
    },
  };
  const { pruneBucket } = await import("../lib/storage_s3/bucket_maintenance.ts");
  const r = await pruneBucket(fakeBucket as unknown as Parameters<typeof pruneBucket>[0], {
    maxAgeMs: 30 * day,
    now,
  });
  assertEquals(r.evicted.map((e) => e.platform.os), ["darwin"]);
  assertEquals(r.leased.map((e) => e.platform.os), ["windows"]);
  assertEquals(deleted, [
    `packages/${H}/example/alpha/terraform-provider-alpha_1.0.0_darwin_arm64.zip`,
    `access/${H}/example/alpha/terraform-provider-alpha_1.0.0_darwin_arm64.zip`,
  ]);
});
