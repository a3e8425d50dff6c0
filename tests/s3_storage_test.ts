/**
 * S3Storage against a real Ceph RGW (tests/_rgw.ts): every Storage method
 * round-trips, commit stores only bytes that hash to the verified sha256
 * (single PUT and multipart), multipart parts stay invisible until the
 * upload completes, abandoned uploads are swept, and the coordination
 * primitives are exact (8 racing creates, one winner).
 * @module
 */
import { assert, assertEquals, assertRejects } from "../lib/deps/assert.ts";
import { createHash } from "../lib/deps/crypto.ts";
import { join } from "../lib/deps/path.ts";
import { fixedCredentials } from "../lib/storage_s3/credentials.ts";
import { S3Client } from "../lib/storage_s3/s3_client.ts";
import { S3Storage } from "../lib/storage_s3/s3_storage.ts";
import { tempDir } from "./_helpers.ts";
import {
  listBucket,
  listUploads,
  newBucket,
  rgw,
  rgwClient,
  type RgwEndpoint,
  skipUnlessRgw,
} from "./_rgw.ts";

const ignore = skipUnlessRgw("S3 storage");
const MiB = 2 ** 20;

function storageOn(
  r: RgwEndpoint,
  bucket: string,
  tmp: string,
  over: { fetch?: typeof fetch; threshold?: number; prefix?: string; timeoutMs?: number } = {},
): S3Storage {
  let n = 0;
  const client = new S3Client({
    endpoint: r.endpoint,
    bucket,
    region: r.region,
    pathStyle: true,
    credentials: fixedCredentials({
      accessKeyId: r.accessKeyId,
      secretAccessKey: r.secretAccessKey,
    }),
    ...(over.fetch ? { fetch: over.fetch } : {}),
    ...(over.timeoutMs ? { timeoutMs: over.timeoutMs } : {}),
  });
  return new S3Storage(client, {
    prefix: over.prefix ?? "mirror/a",
    tempPath: (hint) => join(tmp, `${++n}-${hint}`),
    multipartThresholdBytes: over.threshold ?? 64 * MiB,
    partSizeBytes: 5 * MiB,
  });
}

function bytes(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

async function readAll(s: S3Storage, key: string): Promise<Uint8Array> {
  const o = await s.open(key);
  assert(o, `${key} opens`);
  const out = new Uint8Array(o.size);
  let at = 0;
  for (;;) {
    const n = await o.read(out.subarray(at));
    if (n === null) break;
    at += n;
  }
  o.close();
  return out.subarray(0, at);
}

Deno.test({
  name: "S3Storage: get, put, open (ranges), stat, list, commit, delete round-trip on RGW",
  ignore,
  async fn() {
    await using dir = await tempDir();
    const bucket = await newBucket(rgw!);
    const s = storageOn(rgw!, bucket, dir.path);
    assertEquals(await s.get("refs/x.json"), undefined);
    await s.put("refs/x.json", '{"a":1}');
    assertEquals(new TextDecoder().decode(await s.get("refs/x.json")), '{"a":1}');
    assertEquals(await s.get("refs/x.json", 3), undefined, "bounded by maxBytes");

    const data = bytes(300_000, 7);
    const tmp = s.tempPath("a.zip");
    await Deno.writeFile(tmp, data);
    const key =
      "packages/registry.terraform.io/hashicorp/null/terraform-provider-null_1.0.0_linux_amd64.zip";
    await s.commit(tmp, key, sha(data));
    await assertRejects(() => Deno.stat(tmp), Deno.errors.NotFound); // the temp file is consumed
    assertEquals(sha(await readAll(s, key)), sha(data));
    // A range: seek, then read.
    const o = (await s.open(key))!;
    assertEquals(o.size, data.length);
    await o.seek(123_456, Deno.SeekMode.Start);
    const part = new Uint8Array(1000);
    let got = 0;
    while (got < part.length) got += (await o.read(part.subarray(got)))!;
    assertEquals(part, data.subarray(123_456, 124_456));
    o.close();
    assertEquals((await s.stat(key))?.size, data.length);
    assertEquals(await s.stat("packages/none.zip"), undefined);
    const listed = [];
    for await (const i of s.list("packages/")) listed.push([i.key, i.size]);
    assertEquals(listed, [[key, data.length]]);
    // The bucket mirrors the disk layout under the prefix.
    assertEquals((await listBucket(rgw!, bucket)).map((o) => o.key).sort(), [
      `mirror/a/${key}`,
      "mirror/a/refs/x.json",
    ]);
    assertEquals(await s.delete(key), true);
    assertEquals(await s.delete(key), false);
    assertEquals(await s.open(key), undefined);
  },
});

Deno.test({
  name:
    "S3Storage.commit: bytes that do not hash to the verified sha256 leave nothing under packages/ (PUT and multipart)",
  ignore,
  async fn() {
    await using dir = await tempDir();
    const bucket = await newBucket(rgw!);
    const s = storageOn(rgw!, bucket, dir.path, { threshold: 6 * MiB });
    const small = bytes(100_000, 1);
    const big = bytes(11 * MiB + 17, 2);
    for (const [name, data] of [["small.zip", small], ["big.zip", big]] as const) {
      const tmp = s.tempPath(name);
      await Deno.writeFile(tmp, data);
      const wrong = sha(bytes(10, 3));
      await assertRejects(() => s.commit(tmp, `packages/h/n/t/${name}`, wrong));
    }
    assertEquals(await listBucket(rgw!, bucket, "mirror/a/packages/"), []);
    assertEquals(await listUploads(rgw!, bucket), [], "the failed multipart upload was aborted");
  },
});

Deno.test({
  name: "S3Storage.commit: a multipart upload is invisible until complete, then exact",
  ignore,
  async fn() {
    await using dir = await tempDir();
    const bucket = await newBucket(rgw!);
    const seen: Array<{ listed: string[]; uploads: string[] }> = [];
    const key = "packages/h/n/t/big.zip";
    const s = storageOn(rgw!, bucket, dir.path, {
      threshold: 6 * MiB,
      fetch: async (input, init) => {
        const u = new URL(input instanceof Request ? input.url : String(input));
        if (init?.method === "POST" && u.searchParams.has("uploadId")) {
          // Just before the complete: the parts are all uploaded.
          seen.push({
            listed: (await listBucket(rgw!, bucket)).map((o) => o.key),
            uploads: await listUploads(rgw!, bucket),
          });
        }
        return fetch(input, init);
      },
    });
    const data = bytes(12 * MiB + 5, 9);
    const tmp = s.tempPath("big.zip");
    await Deno.writeFile(tmp, data);
    await s.commit(tmp, key, sha(data));
    assertEquals(seen, [{ listed: [], uploads: [`mirror/a/${key}`] }]);
    assertEquals(await listBucket(rgw!, bucket), [{ key: `mirror/a/${key}`, size: data.length }]);
    assertEquals(sha(await readAll(s, key)), sha(data));
    assertEquals(await listUploads(rgw!, bucket), []);
  },
});

Deno.test({
  name: "S3Storage.sweepUploads aborts multipart uploads older than the bound, keeps younger ones",
  ignore,
  async fn() {
    await using dir = await tempDir();
    const bucket = await newBucket(rgw!);
    const s = storageOn(rgw!, bucket, dir.path);
    const c = rgwClient(rgw!);
    for (const k of ["mirror/a/packages/x.zip", "mirror/a/packages/y.zip"]) {
      const r = await c.fetch(`${rgw!.endpoint}/${bucket}/${k}?uploads`, { method: "POST" });
      assertEquals(r.status, 200, await r.text());
    }
    assertEquals(await s.sweepUploads(3_600_000), 0, "young uploads are kept");
    assertEquals((await listUploads(rgw!, bucket)).length, 2);
    assertEquals(await s.sweepUploads(3_600_000, Date.now() + 2 * 3_600_000), 2);
    assertEquals(await listUploads(rgw!, bucket), []);
  },
});

Deno.test({
  name: "coordination on RGW: 8 racing creates, exactly one wins; stale etag is 'changed'",
  ignore,
  async fn() {
    await using dir = await tempDir();
    const bucket = await newBucket(rgw!);
    const co = storageOn(rgw!, bucket, dir.path).coordination();
    const enc = (s: string) => new TextEncoder().encode(s);
    const results = await Promise.all(
      Array.from({ length: 8 }, (_, i) => co.create("leases/a.lease", enc(`writer ${i}`))),
    );
    const winners = results.filter((r) => r !== "exists") as Array<{ etag: string }>;
    assertEquals(winners.length, 1);
    const read = await co.read("leases/a.lease");
    assert(read);
    assertEquals(read.etag, winners[0]!.etag);
    const winner = results.indexOf(winners[0]!);
    assertEquals(new TextDecoder().decode(read.body), `writer ${winner}`);
    assert(Math.abs(read.serverNow.getTime() - Date.now()) < 60_000);
    assert(read.lastModified.getTime() <= read.serverNow.getTime() + 1000);
    const next = await co.replace("leases/a.lease", enc("renewed"), read.etag);
    assert(next !== "changed");
    assertEquals(await co.replace("leases/a.lease", enc("late"), read.etag), "changed");
    assertEquals(new TextDecoder().decode((await co.read("leases/a.lease"))!.body), "renewed");
    await co.remove("leases/a.lease", next.etag);
    assertEquals(await co.read("leases/a.lease"), undefined);
    assertEquals(await co.create("leases/a.lease", enc("again")) !== "exists", true);
  },
});

Deno.test({
  name:
    "S3Storage: the request timeout bounds the answer's headers, not a slow reader of a large object",
  ignore,
  async fn() {
    await using dir = await tempDir();
    const bucket = await newBucket(rgw!);
    const s = storageOn(rgw!, bucket, dir.path, { timeoutMs: 300 });
    const data = bytes(4 * MiB, 5);
    const tmp = s.tempPath("slow.zip");
    await Deno.writeFile(tmp, data);
    await s.commit(tmp, "packages/h/n/t/slow.zip", sha(data));
    const o = (await s.open("packages/h/n/t/slow.zip"))!;
    const out = new Uint8Array(o.size);
    let at = 0;
    for (;;) {
      const n = await o.read(out.subarray(at, at + 256 * 1024));
      if (n === null) break;
      at += n;
      if (at === 256 * 1024) await new Promise((r) => setTimeout(r, 700)); // a slow client
    }
    o.close();
    assertEquals(sha(out), sha(data));
  },
});
