/**
 * The S3 fleet mode attacked (issue 13 red team): a bucket writer planting
 * an archive with a forged `x-amz-meta-sha256` (or none) against a real Ceph
 * RGW (tests/_rgw.ts); a bucket that stalls mid-body or answers huge lease
 * bodies and garbage dates, against a fake S3 answering through the
 * client's injected `fetch`.
 * @module
 */
import { assert, assertEquals } from "../lib/deps/assert.ts";
import { makeTestApp, sha256Hex, tempDir } from "./_helpers.ts";
import {
  bucketWithOneArchive,
  newBucket,
  randomBytes,
  rgw,
  rgwClient,
  skipUnlessRgw,
  storageConfig,
} from "./_rgw.ts";
import { S3Client } from "../lib/storage_s3/s3_client.ts";
import { S3Storage } from "../lib/storage_s3/s3_storage.ts";

const ignore = skipUnlessRgw("S3 red team");
const H = "registry.terraform.io";
const path = (file: string) => `/${H}/example/alpha/${file}`;
const key = (file: string) => `m/packages/${H}/example/alpha/${file}`;

/** Reads a body to its end or its first error: the bytes that arrived, and whether it was cut. */
async function drain(res: Response): Promise<{ bytes: Uint8Array; cut: boolean }> {
  const parts: Uint8Array[] = [];
  let cut = false;
  try {
    for await (const c of res.body!) parts.push(c);
  } catch {
    cut = true;
  }
  const bytes = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    bytes.set(p, at);
    at += p.length;
  }
  return { bytes, cut };
}

// forged: the sha256 of the planted bytes; absent: none; kept: the archive's
// true sha256 (what an honest replica's upload checks before replacing).
for (const forged of ["forged", "absent", "kept"] as const) {
  Deno.test({
    name:
      `S3 red team: an archive planted in the bucket with its x-amz-meta-sha256 ${forged} is never served whole nor kept; the next request refetches and repairs the bucket`,
    ignore,
    async fn() {
      // Larger than the fingerprint (first and last 64 KiB), changed in between.
      const good = randomBytes(400 * 1024);
      await using seeded = await bucketWithOneArchive(good);
      const { fake, bucket, linux } = seeded;
      await using b = await tempDir();
      const zips = () =>
        fake.count((r) => r.path.startsWith("/files/") && r.path.endsWith(linux.filename));
      assertEquals(zips(), 1);
      const bad = good.slice();
      bad[200 * 1024] = bad[200 * 1024]! ^ 0xff;
      const url = `${rgw!.endpoint}/${bucket}/${key(linux.filename)}`;
      const put = await rgwClient(rgw!).fetch(url, {
        method: "PUT",
        body: bad,
        headers: forged === "absent"
          ? {}
          : { "x-amz-meta-sha256": forged === "forged" ? sha256Hex(bad) : linux.sha256 },
      });
      assertEquals(put.status, 200, await put.text());

      await using second = await makeTestApp(fake, b.path, storageConfig(bucket));
      const r = await second.get(path(linux.filename));
      assertEquals(r.status, 200);
      assertEquals(r.headers.get("x-repoxy-cache"), "hit");
      const got = await drain(r);
      assert(got.cut, "the transfer is cut");
      assert(got.bytes.length < bad.length, `${got.bytes.length} bytes reached the client`);
      await second.app.settle();
      const kept = await Deno.readFile(`${b.path}/packages/${H}/example/alpha/${linux.filename}`)
        .catch(() => undefined);
      assertEquals(kept, undefined, "the planted bytes were not kept on the local tier");
      assertEquals(zips(), 1);

      // The next request reads the bad object as absent: fetched, verified,
      // served whole and put back into the bucket.
      const again = await drain(await second.get(path(linux.filename)));
      assertEquals(again.cut, false, second.log.lines.join("\n"));
      assertEquals(sha256Hex(again.bytes), linux.sha256);
      await second.app.settle();
      assertEquals(zips(), 2);
      const inBucket = await rgwClient(rgw!).fetch(url);
      assertEquals(sha256Hex(new Uint8Array(await inBucket.arrayBuffer())), linux.sha256);
    },
  });
}

Deno.test({
  name:
    "S3 red team: storage.redirect never sends a client to a bucket object whose recorded sha256 is not the archive's; it is streamed and checked instead",
  ignore,
  async fn() {
    const good = randomBytes(400 * 1024);
    await using seeded = await bucketWithOneArchive(good, { redirect: true });
    const { fake, bucket, linux, config } = seeded;
    await using b = await tempDir();
    {
      // The honest object: a replica with an empty disk redirects to it.
      await using probe = await makeTestApp(fake, b.path, config);
      const r = await probe.get(path(linux.filename));
      await r.body?.cancel();
      assertEquals(r.status, 302);
      assert(r.headers.get("location")!.includes("X-Amz-Signature"));
      // Neither the secret nor a presigned URL's signature shows anywhere an
      // operator or a client can read: log, status page, metrics, readyz.
      const shown = [probe.log.lines.join("\n")];
      for (const where of ["/", "/-/metrics", "/-/readyz"]) {
        const res = await probe.get(where, { headers: { accept: "text/html" } });
        shown.push(await res.text());
      }
      for (const text of shown) {
        assert(!text.includes(rgw!.secretAccessKey), "the secret key leaked");
        assert(!/X-Amz-Signature|X-Amz-Credential/i.test(text), "a presigned URL leaked");
      }
    }
    const bad = good.slice();
    bad[200 * 1024] = bad[200 * 1024]! ^ 0xff;
    const put = await rgwClient(rgw!).fetch(
      `${rgw!.endpoint}/${bucket}/${key(linux.filename)}`,
      { method: "PUT", body: bad, headers: { "x-amz-meta-sha256": sha256Hex(bad) } },
    );
    assertEquals(put.status, 200, await put.text());
    await using c = await tempDir();
    await using second = await makeTestApp(fake, c.path, config);
    const r = await second.get(path(linux.filename));
    assertEquals(r.status, 200, `answered ${r.status} ${r.headers.get("location") ?? ""}`);
    const got = await drain(r);
    assert(got.cut, "the transfer is cut");
    assert(got.bytes.length < bad.length);
  },
});

Deno.test({
  name:
    "S3 red team: keys with a port, semver build metadata, long names and characters SigV4 escapes differently round-trip through put, get, head, list, upload and a presigned GET",
  ignore,
  async fn() {
    const bucket = await newBucket(rgw!);
    const client = new S3Client({
      endpoint: rgw!.endpoint,
      bucket,
      region: rgw!.region,
      pathStyle: true,
      credentials: () =>
        Promise.resolve({ accessKeyId: rgw!.accessKeyId, secretAccessKey: rgw!.secretAccessKey }),
    });
    await using dir = await tempDir();
    const tmp = `${dir.path}/f`;
    const s = new S3Storage(client, {
      prefix: "m",
      tempPath: () => tmp,
      multipartThresholdBytes: 1 << 30,
      partSizeBytes: 1 << 24,
    });
    const keys = [
      "refs/127.0.0.1:8443/ns/t/1.0.0+build.5/download_linux_amd64",
      "packages/h/ns/t/terraform-provider-t_1.0.0-rc.1+meta~x_linux_amd64.zip",
      "refs/h/" + "a".repeat(200) + "/x",
      "refs/h/sp ace/\u00e9\u20ac/x*()!'%2F",
    ];
    const text = (b: Uint8Array | undefined) => new TextDecoder().decode(b);
    for (const k of keys) {
      await s.put(k, "put " + k);
      assertEquals(text(await s.get(k)), "put " + k);
      assertEquals((await s.head(k))?.size, new TextEncoder().encode("put " + k).length);
      const r = await fetch(await s.presign(k, 60));
      assertEquals(await r.text(), "put " + k);
      const listed: string[] = [];
      for await (const o of s.list(k.slice(0, k.lastIndexOf("/") + 1))) listed.push(o.key);
      assertEquals(listed, [k]);
      await Deno.writeTextFile(tmp, "file " + k);
      await s.upload(tmp, k);
      assertEquals(text(await s.get(k)), "file " + k);
    }
    // `%2F` stays three characters of one segment, never a slash.
    const all: string[] = [];
    for await (const o of s.list("refs/h/sp ace/")) all.push(o.key);
    assertEquals(all, [keys[3]]);
  },
});
