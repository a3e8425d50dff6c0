/**
 * Two real `repoxy serve` processes, started with the service's permission
 * set (`-P=serve`), on one bucket of a real Ceph RGW: the first fetches an
 * archive and uploads it (node:http under those permissions), the second,
 * with an empty disk, serves it from the bucket with the upstream stopped.
 * @module
 */
import { assertEquals } from "../lib/deps/assert.ts";
import { fromFileUrl, join } from "../lib/deps/path.ts";
import { writeFakeConfig } from "./_cli.ts";
import { spawnRepoxy } from "./_process.ts";
import { bytesOf, sha256Hex, tempDir } from "./_helpers.ts";
import { startFakeRegistry } from "./fake_registry.ts";
import { listBucket, newBucket, rgw, skipUnlessRgw } from "./_rgw.ts";

const ignore = skipUnlessRgw("S3 storage, real processes");
const MAIN = fromFileUrl(new URL("../main.ts", import.meta.url));
const H = "registry.terraform.io";

Deno.test({
  name:
    "repoxy serve (-P=serve) on a bucket: one replica uploads, an empty one serves it with the upstream down",
  ignore,
  async fn() {
    await using dir = await tempDir();
    const fake = await startFakeRegistry({
      providers: [{
        namespace: "example",
        type: "alpha",
        versions: [{ version: "1.0.0", platforms: ["linux_amd64"] }],
      }],
    });
    const bucket = await newBucket(rgw!);
    const linux = fake.archive("alpha", "1.0.0", "linux_amd64");
    const zip = `/${H}/example/alpha/${linux.filename}`;
    const storage = {
      kind: "s3",
      endpoint: rgw!.endpoint,
      bucket,
      prefix: "fleet",
      credentials: {
        accessKeyId: "env:REPOXY_TEST_S3_ID",
        secretAccessKey: "env:REPOXY_TEST_S3_SECRET",
      },
    };
    const env = {
      REPOXY_TEST_S3_ID: rgw!.accessKeyId,
      REPOXY_TEST_S3_SECRET: rgw!.secretAccessKey,
    };
    const serve = async (name: string) => {
      await Deno.mkdir(join(dir.path, name));
      const { config } = await writeFakeConfig(join(dir.path, name), fake, { storage });
      return await spawnRepoxy(Deno.execPath(), [
        "run",
        "-P=serve",
        MAIN,
        "serve",
        "--config",
        config,
        "--listen",
        "127.0.0.1:0",
      ], { env });
    };
    try {
      {
        await using a = await serve("a");
        const r = await fetch(new URL(zip, a.url));
        assertEquals(sha256Hex(await bytesOf(r)), linux.sha256);
        // The upload follows the client's last byte; stopping waits for it.
        assertEquals((await a.stop()).code, 0);
      }
      assertEquals(
        (await listBucket(rgw!, bucket, "fleet/packages/")).map((o) => o.size),
        [linux.bytes.length],
      );
      await fake.stop();
      await using b = await serve("b");
      const r = await fetch(new URL(zip, b.url));
      assertEquals(r.status, 200);
      assertEquals(await bytesOf(r), linux.bytes);
      const ready = await (await fetch(new URL("/-/readyz", b.url))).json();
      assertEquals([ready.status, ready.storage.reachable], ["ready", true]);
    } finally {
      await fake.stop();
    }
  },
});
