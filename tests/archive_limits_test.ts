/**
 * Issue 10, row 5: an upstream archive body is bounded in size
 * (`limits.archiveSize`), in rate (`limits.minTransferRate` over
 * `limits.transferRateWindow`) and in temp space (inside `maxCacheSize`).
 * Every hostile body here ends by itself after a few MB or seconds, so code
 * without the bound fails its assertions instead of hanging.
 * @module
 */
import { assert, assertEquals, assertMatch, assertRejects } from "../lib/deps/assert.ts";
import { dirname, join } from "../lib/deps/path.ts";
import {
  bytesOf,
  exists,
  listDir,
  makeTestApp,
  type MirrorFixture,
  mirrorFixture,
  sha256Hex,
  tempDir,
} from "./_helpers.ts";
import { MAX_PASS_THROUGHS } from "../lib/cache/download.ts";
import type { HttpError } from "../lib/http/errors.ts";
import { makeZip } from "./_zip.ts";

const H = "registry.terraform.io";
const ALPHA = [{
  namespace: "example",
  type: "alpha",
  versions: [{ version: "1.0.0", platforms: ["linux_amd64", "darwin_arm64"] }],
}];
const FILE = "terraform-provider-alpha_1.0.0_linux_amd64.zip";
const ZIP = `/${H}/example/alpha/${FILE}`;

function isZipFetch(path: string, file = FILE): boolean {
  return path.startsWith("/files/") && path.endsWith(file);
}

/** Random bytes (incompressible, like a provider binary). */
function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, i + 65536));
  return out;
}

/**
 * A body of `chunk`-byte pieces, one every `everyMs`, that errors after
 * `total` bytes (so code without the bound under test stops too).
 */
function hostileBody(
  opts: { chunk: number; everyMs: number; total: number },
  counter: { sent: number },
): ReadableStream<Uint8Array> {
  const piece = new Uint8Array(opts.chunk).fill(0x41);
  let timer: ReturnType<typeof setTimeout> | undefined;
  let wake: (() => void) | undefined;
  let cancelled = false;
  return new ReadableStream<Uint8Array>({
    async pull(c) {
      if (counter.sent >= opts.total) {
        c.error(new Error("the hostile upstream gives up"));
        return;
      }
      if (opts.everyMs > 0) {
        await new Promise<void>((r) => {
          wake = r;
          timer = setTimeout(r, opts.everyMs);
        });
      }
      if (cancelled) return;
      c.enqueue(piece.slice());
      counter.sent += piece.length;
    },
    cancel() {
      // The connection went away: no timer may outlive the test.
      cancelled = true;
      clearTimeout(timer);
      wake?.();
    },
  }, { highWaterMark: 0 });
}

/** The app's temp area (wherever the storage puts it). */
function tmpDirOf(t: MirrorFixture): string {
  return dirname(t.app.cache.storage.tempPath("x"));
}

/** Samples the largest archive temp file in `dir` (not metadata writes) until stopped. */
function watchLargest(dir: string): { stop(): Promise<number> } {
  let max = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      try {
        for await (const e of Deno.readDir(dir)) {
          if (!e.name.startsWith("terraform-provider-")) continue;
          const st = await Deno.stat(join(dir, e.name)).catch(() => undefined);
          if (st && st.size > max) max = st.size;
        }
      } catch { /* dir gone */ }
      await new Promise((r) => setTimeout(r, 2));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return max;
    },
  };
}

/** Reads a body that is expected to break; returns the bytes that came and whether it broke. */
async function readBroken(res: Response): Promise<{ bytes: number; broke: boolean }> {
  let bytes = 0;
  try {
    for await (const c of res.body!) bytes += c.length;
    return { bytes, broke: false };
  } catch {
    return { bytes, broke: true };
  }
}

Deno.test("archiveSize: an upstream Content-Length over it is refused with 502 before any byte is written", async () => {
  const sent = { sent: 0 };
  await using t = await mirrorFixture({
    providers: ALPHA,
    config: { limits: { archiveSize: 1024 * 1024 } },
    registry: {
      intercept: (req) => {
        if (!isZipFetch(new URL(req.url).pathname)) return undefined;
        // Declares 10 GiB; sends at most 8 MB before giving up.
        return new Response(hostileBody({ chunk: 64 * 1024, everyMs: 0, total: 8e6 }, sent), {
          headers: { "content-length": String(10 * 2 ** 30) },
        });
      },
    },
  });
  const watch = watchLargest(tmpDirOf(t));
  const res = await t.get(ZIP);
  const body = await res.text();
  await t.app.settle();
  const largest = await watch.stop();
  assertEquals(res.status, 502);
  assertMatch(body, /over the archive size limit of 1048576/);
  assertEquals(largest, 0, "no temp file ever held a byte");
  assertEquals(t.fake.count((r) => isZipFetch(r.path)), 1);
  assertEquals(await listDir(tmpDirOf(t)), []);
  assertEquals(await listDir(join(t.dir.path, "packages")), []);
});

Deno.test("archiveSize: a body without Content-Length is cut at the bound; the client gets a failed transfer", async () => {
  const limit = 256 * 1024;
  const sent = { sent: 0 };
  await using t = await mirrorFixture({
    providers: ALPHA,
    config: { limits: { archiveSize: limit } },
    registry: {
      intercept: (req) => {
        if (!isZipFetch(new URL(req.url).pathname)) return undefined;
        // "Endless" (8 MB here, so unbounded code ends too), no Content-Length.
        return new Response(hostileBody({ chunk: 16 * 1024, everyMs: 0, total: 8e6 }, sent));
      },
    },
  });
  const watch = watchLargest(tmpDirOf(t));
  const res = await t.get(ZIP);
  assertEquals(res.status, 200);
  const got = await readBroken(res);
  await t.app.settle();
  const largest = await watch.stop();
  assert(got.broke, "the transfer must fail, never complete");
  assert(got.bytes < limit, `client got ${got.bytes} bytes, at most ${limit - 1}`);
  assert(largest <= limit, `temp file reached ${largest} bytes, bound ${limit}`);
  const failed = t.log.records.find((r) => r.msg === "archive download failed; nothing cached");
  assert(failed, "the failure is logged");
  assert((failed.written as number) <= limit, `wrote ${failed.written}`);
  assertMatch(String(failed.error), /ran past the archive size limit of 262144 bytes/);
  assertEquals(await listDir(tmpDirOf(t)), []);
  assertEquals(await listDir(join(t.dir.path, "packages")), []);
});

Deno.test("minTransferRate: a trickling body is aborted after one window; nothing is stored", async () => {
  const sent = { sent: 0 };
  await using t = await mirrorFixture({
    providers: ALPHA,
    // 64 KiB/s over 1 s; the body trickles ~2 KB/s (and gives up after 6 KB,
    // ~3 s, so code without the bound fails the assertions instead of hanging).
    config: { limits: { minTransferRate: 65536, transferRateWindow: "1s" } },
    registry: {
      intercept: (req) => {
        if (!isZipFetch(new URL(req.url).pathname)) return undefined;
        return new Response(hostileBody({ chunk: 100, everyMs: 50, total: 6000 }, sent), {
          headers: { "content-length": "1000000" },
        });
      },
    },
  });
  const res = await t.get(ZIP);
  assertEquals(res.status, 200);
  const got = await readBroken(res);
  await t.app.settle();
  assert(got.broke);
  const failed = t.log.records.find((r) => r.msg === "archive download failed; nothing cached");
  assert(failed);
  assertMatch(String(failed.error), /under the minimum of/);
  assert(sent.sent < 6000, `the upstream was dropped before it gave up (sent ${sent.sent})`);
  assertEquals(await listDir(tmpDirOf(t)), []);
  assertEquals(await listDir(join(t.dir.path, "packages")), []);

  // The same bound leaves a fast body alone.
  const a = t.fake.archive("alpha", "1.0.0", "darwin_arm64");
  const ok = await t.get(`/${H}/example/alpha/${a.filename}`);
  assertEquals(await bytesOf(ok), a.bytes);
  await t.app.settle();
  assert(await exists(join(t.dir.path, "packages", H, "example", "alpha", a.filename)));
});

Deno.test("maxCacheSize: a download in flight reserves its declared size; older archives are evicted for it before it ends", async () => {
  let release!: () => void;
  const gate = new Promise<void>((r) => release = r);
  const second = "terraform-provider-alpha_1.0.0_darwin_arm64.zip";
  const fake: { it?: MirrorFixture["fake"] } = {};
  await using t = await mirrorFixture({
    providers: ALPHA,
    // Room for one of the two archives only (they are the same size ±1).
    config: { maxCacheSize: 400 },
    registry: {
      intercept: (req) => {
        if (!isZipFetch(new URL(req.url).pathname, second)) return undefined;
        const bytes = fake.it!.archive("alpha", "1.0.0", "darwin_arm64").bytes;
        let step = 0;
        return new Response(
          new ReadableStream<Uint8Array>({
            async pull(c) {
              if (step === 0) c.enqueue(bytes.slice(0, 100));
              else if (step === 1) {
                await gate;
                c.enqueue(bytes.slice(100));
              } else c.close();
              step++;
            },
          }),
          { headers: { "content-length": String(bytes.length) } },
        );
      },
    },
  });
  fake.it = t.fake;
  const first = t.fake.archive("alpha", "1.0.0", "linux_amd64");
  assert(first.bytes.length + t.fake.archive("alpha", "1.0.0", "darwin_arm64").bytes.length > 400);
  assert(first.bytes.length <= 400);
  assertEquals(await bytesOf(await t.get(ZIP)), first.bytes);
  await t.app.settle();
  const firstPath = join(t.dir.path, "packages", H, "example", "alpha", FILE);
  assert(await exists(firstPath));

  const res = await t.get(`/${H}/example/alpha/${second}`);
  assertEquals(res.headers.get("x-repoxy-cache"), "miss");
  // The second download is held mid-body: its reservation alone must make room.
  for (let i = 0; i < 200 && await exists(firstPath); i++) {
    await new Promise((r) => setTimeout(r, 10));
  }
  assertEquals(await exists(firstPath), false, "evicted while the download was still running");
  assertEquals(t.app.downloads.count, 1);
  release();
  assertEquals(
    sha256Hex(await bytesOf(res)),
    t.fake.archive("alpha", "1.0.0", "darwin_arm64").sha256,
  );
  await t.app.settle();
  assert(await exists(join(t.dir.path, "packages", H, "example", "alpha", second)));
});

Deno.test("maxCacheSize: a body without Content-Length that outgrows the quota is passed through, verified, never stored", async () => {
  const big = await makeZip([{
    name: "terraform-provider-alpha_v1.0.0",
    data: randomBytes(600_000),
  }]);
  const quota = 200_000;
  await using t = await mirrorFixture({
    providers: ALPHA,
    config: { maxCacheSize: quota },
    registry: {
      zipOverride: (name, zip) => name === FILE ? big : zip,
      intercept: (req) => {
        if (!isZipFetch(new URL(req.url).pathname)) return undefined;
        let at = 0;
        return new Response(
          new ReadableStream<Uint8Array>({
            pull(c) {
              if (at >= big.length) return c.close();
              c.enqueue(big.slice(at, at + 32 * 1024));
              at += 32 * 1024;
            },
          }),
        );
      },
    },
  });
  const watch = watchLargest(tmpDirOf(t));
  const res = await t.get(ZIP);
  const bytes = await bytesOf(res);
  await t.app.settle();
  const largest = await watch.stop();
  assertEquals(sha256Hex(bytes), sha256Hex(big));
  assertEquals(bytes.length, big.length);
  assert(largest <= quota, `temp file reached ${largest} bytes, quota ${quota}`);
  assert(t.log.records.some((r) => r.msg === "archive passed through without caching"));
  assertEquals(await exists(join(t.dir.path, "packages", H, "example", "alpha", FILE)), false);
  assertEquals(await listDir(tmpDirOf(t)), []);
});

Deno.test("a pass-through whose body is wrong still never completes for the client", async () => {
  // Same path as above, but the upstream's bytes do not match the signed sum.
  const big = await makeZip([{
    name: "terraform-provider-alpha_v1.0.0",
    data: randomBytes(300_000),
  }]);
  const evil = big.slice();
  evil[evil.length - 100] = evil[evil.length - 100]! ^ 0xff;
  await using t = await mirrorFixture({
    providers: ALPHA,
    config: { maxCacheSize: 100_000 },
    registry: {
      zipOverride: (name, zip) => name === FILE ? big : zip,
      intercept: (req) => {
        if (!isZipFetch(new URL(req.url).pathname)) return undefined;
        return new Response(
          new ReadableStream<Uint8Array>({
            start(c) {
              for (let i = 0; i < evil.length; i += 32 * 1024) {
                c.enqueue(evil.slice(i, i + 32 * 1024));
              }
              c.close();
            },
          }),
        );
      },
    },
  });
  const watch = watchLargest(tmpDirOf(t));
  const res = await t.get(ZIP);
  const got = await readBroken(res);
  await t.app.settle();
  const largest = await watch.stop();
  assert(got.broke);
  // Never the whole body. How much of it arrived before the failure depends on
  // how far the client had read when the hash mismatched (at most all but the
  // held-back last byte), so only the bound is asserted.
  assert(got.bytes <= evil.length - 1, `got ${got.bytes} of ${evil.length} bytes`);
  // It went through memory, not a temp file over the quota.
  assert(largest <= 100_000, `temp file reached ${largest} bytes`);
  assert(t.log.records.some((r) => r.msg === "archive passed through without caching"));
  await assertRejects(() => Deno.stat(join(t.dir.path, "packages", H, "example", "alpha", FILE)));
});

Deno.test("a pass-through stops reading the upstream when its client leaves", async () => {
  const sent = { sent: 0 };
  await using t = await mirrorFixture({
    providers: ALPHA,
    // Declared 8 MB against a 1 MB quota: passed through from the start.
    config: { maxCacheSize: 1_000_000 },
    registry: {
      intercept: (req) => {
        if (!isZipFetch(new URL(req.url).pathname)) return undefined;
        return new Response(
          hostileBody({ chunk: 64 * 1024, everyMs: 0, total: 8 * 2 ** 20 }, sent),
          {
            headers: { "content-length": String(8 * 2 ** 20) },
          },
        );
      },
    },
  });
  const res = await t.get(ZIP);
  assertEquals(res.headers.get("x-repoxy-cache"), "bypass");
  const reader = res.body!.getReader();
  await reader.read();
  await reader.cancel();
  await t.app.settle();
  const failed = t.log.records.find((r) => r.msg === "archive download failed; nothing cached");
  assert(failed);
  assertMatch(
    String(failed.error),
    /client.* left a pass-through download|clients of a pass-through download left/,
  );
  // At most the in-memory window (2 MiB) and socket buffers, not the 8 MiB.
  assert(sent.sent < 6 * 2 ** 20, `the upstream sent ${sent.sent} bytes`);
  assertEquals(await listDir(tmpDirOf(t)), []);
});

Deno.test("a pass-through reads the upstream only as fast as its client (a bounded window ahead)", async () => {
  const sent = { sent: 0 };
  const total = 64 * 2 ** 20;
  await using t = await mirrorFixture({
    providers: ALPHA,
    // Declared 64 MiB against a 1 MB quota: passed through from the start.
    config: { maxCacheSize: 1_000_000 },
    registry: {
      intercept: (req) => {
        if (!isZipFetch(new URL(req.url).pathname)) return undefined;
        return new Response(hostileBody({ chunk: 64 * 1024, everyMs: 0, total }, sent), {
          headers: { "content-length": String(total) },
        });
      },
    },
  });
  const res = await t.get(ZIP);
  assertEquals(res.headers.get("x-repoxy-cache"), "bypass");
  const reader = res.body!.getReader();
  await reader.read();
  // The client stalls; a fast upstream must not be read into memory meanwhile.
  await new Promise((r) => setTimeout(r, 1_000));
  const ahead = sent.sent;
  await reader.cancel();
  await t.app.settle();
  // The 2 MiB window plus socket buffers, not the 64 MiB body.
  assert(ahead < 16 * 2 ** 20, `the upstream sent ${ahead} bytes to a stalled client`);
});

Deno.test("a failed disk bounds uncached transfers: past MAX_PASS_THROUGHS new archives get a 503", async () => {
  await using dir = await tempDir();
  await using t = await makeTestApp(undefined, dir.path, {}, { diskProbeIntervalMs: 60_000 });
  const downloads = t.app.downloads;
  downloads.opts.health.fail("disk full (test)", 1);
  const stop = new AbortController();
  // Sources that never answer until the test ends: each start is one uncached transfer.
  const source = {
    open: (signal: AbortSignal) =>
      new Promise<never>((_, reject) =>
        signal.addEventListener("abort", () => reject(signal.reason), { once: true })
      ),
    expectedSha256: "0".repeat(64),
    signal: stop.signal,
  };
  const p = { hostname: "registry.terraform.io", namespace: "example", type: "alpha" };
  const started = [];
  for (let i = 0; i < MAX_PASS_THROUGHS; i++) {
    started.push(downloads.start(p, `1.0.${i}`, { os: "linux", arch: "amd64" }, source));
  }
  assertEquals(downloads.passThroughs, MAX_PASS_THROUGHS);
  // The same archive still joins its transfer; a new one is refused.
  assertEquals(downloads.start(p, "1.0.0", { os: "linux", arch: "amd64" }, source), started[0]);
  const refused = (() => {
    try {
      downloads.start(p, "9.9.9", { os: "linux", arch: "amd64" }, source);
    } catch (e) {
      return e as HttpError;
    }
  })();
  assertEquals(refused?.status, 503);
  assertEquals(new Headers(refused?.headers).get("retry-after"), "5");
  stop.abort();
  await Promise.allSettled(started.map((d) => d.done));
  assertEquals(downloads.passThroughs, 0);
});
