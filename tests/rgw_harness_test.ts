/**
 * The RGW harness itself: the cluster answers S3 with the semantics the
 * fleet relies on (conditional create, If-Match without quotes, multipart
 * invisible until complete).
 * @module
 */
import { assertEquals } from "../lib/deps/assert.ts";
import { listBucket, newBucket, rgw, rgwClient, skipUnlessRgw } from "./_rgw.ts";

const ignore = skipUnlessRgw("RGW harness");

Deno.test({
  name: "RGW: one bucket per test, conditional writes answer 412",
  ignore,
  async fn() {
    const c = rgwClient(rgw!);
    const bucket = await newBucket(rgw!);
    const url = `${rgw!.endpoint}/${bucket}/a/b.txt`;
    const first = await c.fetch(url, {
      method: "PUT",
      body: "one",
      headers: { "if-none-match": "*" },
    });
    await first.body?.cancel();
    assertEquals(first.status, 200);
    const again = await c.fetch(url, {
      method: "PUT",
      body: "two",
      headers: { "if-none-match": "*" },
    });
    await again.body?.cancel();
    assertEquals(again.status, 412);
    assertEquals(await listBucket(rgw!, bucket), [{ key: "a/b.txt", size: 3 }]);
    const r = await c.fetch(url);
    assertEquals(await r.text(), "one");
  },
});
