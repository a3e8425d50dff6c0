/**
 * Issue 10, row 8: the disk fills mid-download. On a real 4 MB tmpfs used as
 * the cache dir, a 6 MB archive: the client still gets exactly the signed
 * bytes (verified pass-through), nothing partial is stored, `/-/readyz` says
 * 503 with the reason, further requests are `bypass` (not cut), and once the
 * filesystem grows the recovery probe makes readyz 200 again and the next
 * request caches.
 *
 * Needs root and `mount`; otherwise prints one SKIP line and is ignored.
 * @module
 */
import { assert, assertEquals, assertMatch } from "../lib/deps/assert.ts";
import { dirname, join } from "../lib/deps/path.ts";
import { bytesOf, jsonOf, listDir, makeTestApp, sha256Hex } from "./_helpers.ts";
import { startFakeRegistry } from "./fake_registry.ts";
import { makeZip } from "./_zip.ts";

const H = "registry.terraform.io";
const FILE = "terraform-provider-big_1.0.0_linux_amd64.zip";
const ZIP = `/${H}/example/big/${FILE}`;

function run(cmd: string, args: string[]): { ok: boolean; err: string } {
  try {
    const out = new Deno.Command(cmd, { args, stdout: "null", stderr: "piped" }).outputSync();
    return { ok: out.success, err: new TextDecoder().decode(out.stderr).trim() };
  } catch (e) {
    return { ok: false, err: (e as Error).message };
  }
}

/** Decided at module load: root, and a tmpfs can really be mounted here. */
const skipReason = (() => {
  if (Deno.build.os !== "linux") return "not Linux";
  if (Deno.uid() !== 0) return "not root (a tmpfs mount is needed)";
  const probe = Deno.makeTempDirSync({ prefix: "repoxy-mountprobe-" });
  try {
    const m = run("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", probe]);
    if (!m.ok) return `cannot mount a tmpfs: ${m.err}`;
    run("umount", [probe]);
    return undefined;
  } finally {
    Deno.removeSync(probe, { recursive: true });
  }
})();
// deno-lint-ignore no-console
if (skipReason) console.log(`SKIP: disk_full_test: ${skipReason}`);

function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, i + 65536));
  return out;
}

Deno.test({
  name: "disk full mid-download: verified pass-through, readyz 503, recovery by itself",
  ignore: skipReason !== undefined,
  async fn() {
    const big = await makeZip([{ name: "terraform-provider-big_v1.0.0", data: randomBytes(6e6) }]);
    await using fake = await startFakeRegistry({
      providers: [{
        namespace: "example",
        type: "big",
        versions: [{ version: "1.0.0", platforms: ["linux_amd64"] }],
      }],
      zipOverride: (name, zip) => name === FILE ? big : zip,
    });
    const want = sha256Hex(big);
    const cacheDir = await Deno.makeTempDir({ prefix: "repoxy-diskfull-" });
    const mounted = run("mount", ["-t", "tmpfs", "-o", "size=4m", "tmpfs", cacheDir]);
    assert(mounted.ok, mounted.err);
    try {
      await using t = await makeTestApp(fake, cacheDir, {}, { diskProbeIntervalMs: 50 });
      const isZip = (r: { path: string }) => r.path.startsWith("/files/") && r.path.endsWith(FILE);

      // 1. The disk fills mid-download: both clients attached (one reading
      // slowly) still get every byte, from one upstream transfer.
      const [first, joined] = await Promise.all([t.get(ZIP), t.get(ZIP)]);
      assertEquals(first.status, 200);
      assertEquals(joined.status, 200);
      const slowRead = (async () => {
        const chunks: Uint8Array[] = [];
        for await (const c of joined.body!) {
          chunks.push(c);
          await new Promise((r) => setTimeout(r, 1));
        }
        return sha256Hex(await new Blob(chunks as BlobPart[]).bytes());
      })();
      const got = await bytesOf(first);
      assertEquals(got.length, big.length);
      assertEquals(sha256Hex(got), want);
      assertEquals(await slowRead, want);
      assertEquals(fake.count(isZip), 1);
      await t.app.settle();
      assert(
        t.log.records.some((r) =>
          r.msg === "cache not writable; streaming the archive without caching it" &&
          /No space left|os error 28/.test(String(r.error))
        ),
        "the disk failure is logged",
      );
      assertEquals(await listDir(join(cacheDir, "packages", H)), [], "nothing partial stored");
      // Wherever the storage keeps its temp files.
      const tmp = dirname(t.app.cache.storage.tempPath("x"));
      assertEquals(
        (await listDir(tmp)).filter((n) => n.startsWith("terraform-provider-")),
        [],
        "the temp file is removed",
      );

      // 2. readyz says so, with the reason.
      const ready = await t.get("/-/readyz");
      assertEquals(ready.status, 503);
      assertMatch(JSON.stringify(await jsonOf(ready)), /No space left|os error 28|not writable/);

      // 3. A retry while the disk is still too small: bypass, complete, verified.
      const retry = await t.get(ZIP);
      assertEquals(retry.headers.get("x-repoxy-cache"), "bypass");
      assertEquals(sha256Hex(await bytesOf(retry)), want);
      await t.app.settle();
      assertEquals(await listDir(join(cacheDir, "packages", H)), []);

      // 4. Space returns: readyz turns 200 by itself, and the next request caches.
      const grown = run("mount", ["-o", "remount,size=32m", "tmpfs", cacheDir]);
      assert(grown.ok, grown.err);
      let status = 503;
      for (let i = 0; i < 200 && status !== 200; i++) {
        await new Promise((r) => setTimeout(r, 25));
        const r = await t.get("/-/readyz");
        status = r.status;
        await r.body?.cancel();
      }
      assertEquals(status, 200, "readyz recovers without a restart");
      const before = fake.count(isZip);
      const third = await t.get(ZIP);
      assertEquals(third.headers.get("x-repoxy-cache"), "miss");
      assertEquals(sha256Hex(await bytesOf(third)), want);
      await t.app.settle();
      assertEquals(fake.count(isZip), before + 1);
      const stored = await Deno.readFile(join(cacheDir, "packages", H, "example", "big", FILE));
      assertEquals(sha256Hex(stored), want);
      const hit = await t.get(ZIP);
      assertEquals(hit.headers.get("x-repoxy-cache"), "hit");
      assertEquals(sha256Hex(await bytesOf(hit)), want);
      assertEquals(fake.count(isZip), before + 1);
    } finally {
      run("umount", ["-l", cacheDir]);
      await Deno.remove(cacheDir, { recursive: true }).catch(() => {});
    }
  },
});
