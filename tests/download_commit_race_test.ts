/**
 * A client joining a download in the instant its commit renamed the temp
 * file away (state still "verified") reads the stored copy, not a NotFound.
 * Found by bench/cold_init.ts --warm-process: Terraform's GET right after its
 * HEAD failed with an HTTP/2 INTERNAL_ERROR now and then.
 */
import { assertEquals } from "../lib/deps/assert.ts";
import { Download } from "../lib/cache/shared_download.ts";
import type { ArchiveMeta } from "../lib/cache/archive_meta.ts";
import { makeTestApp, sha256Hex, tempDir } from "./_helpers.ts";

Deno.test("a reader opening the temp file after the commit's rename reads the stored archive", async () => {
  await using dir = await tempDir();
  await using t = await makeTestApp(undefined, dir.path);
  const packages = t.app.packages;
  const p = { hostname: "registry.terraform.io", namespace: "example", type: "alpha" };
  const pl = { os: "linux", arch: "amd64" };
  const bytes = new TextEncoder().encode("archive bytes, verified and committed");
  const meta: ArchiveMeta = {
    sha256: sha256Hex(bytes),
    size: bytes.length,
    cachedAt: 0,
    url: "https://example.test/a.zip",
  };
  const tmp = packages.storage.tempPath("alpha.zip");
  let committed!: () => void;
  const renamed = new Promise<void>((r) => (committed = r));
  let finish!: () => void;
  const gate = new Promise<void>((r) => (finish = r));
  const d = new Download(tmp, packages.keyOf(p, "1.0.0", pl), packages, async (d) => {
    await Deno.writeFile(tmp, bytes);
    d.markReady(bytes.length);
    d.written = d.fileBytes = bytes.length;
    d.state = "verified";
    d.notify();
    await packages.commit(p, "1.0.0", pl, tmp, meta);
    committed();
    await gate; // the log line and the rest of the run, before "stored"
    return meta;
  });
  await renamed;
  assertEquals(d.state, "verified");
  const reading = new Response(d.reader()).arrayBuffer();
  setTimeout(finish, 20);
  assertEquals(new Uint8Array(await reading), bytes);
  await d.done;
});
