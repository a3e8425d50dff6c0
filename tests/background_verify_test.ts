/**
 * Bytes that rot on disk (issue 10, "also weak"): every open re-checks the
 * archive's size and cheap fingerprint (first and last 64 KiB), and the
 * background check re-hashes the whole cache at `backgroundVerify.rate`,
 * one pass per `backgroundVerify.interval`. A bad archive is removed (or
 * quarantined), counted, and fetched again on the next request.
 * @module
 */
import { assert, assertEquals } from "../lib/deps/assert.ts";
import { join } from "../lib/deps/path.ts";
import { FIRST_PASS_DELAY_MS } from "../lib/cache/background_verify.ts";
import { bytesOf, mirrorFixture, sha256Hex, TWO_PROVIDERS } from "./_helpers.ts";
import { makeZip } from "./_zip.ts";

const H = "registry.terraform.io";

/** An archive well over the 2 × 64 KiB the fingerprint reads. */
async function bigZip(): Promise<Uint8Array> {
  const data = new Uint8Array(400 * 1024);
  for (let i = 0; i < data.length; i += 65536) {
    crypto.getRandomValues(data.subarray(i, Math.min(data.length, i + 65536)));
  }
  return await makeZip([{ name: "terraform-provider-alpha_v1.0.0", data, mode: 0o755 }]);
}

async function overwrite(path: string, offset: number, bytes: Uint8Array) {
  using f = await Deno.open(path, { write: true });
  await f.seek(offset, Deno.SeekMode.Start);
  await f.write(bytes);
}

async function metric(res: Response, name: string): Promise<number> {
  const line = (await res.text()).split("\n").find((l) => l.startsWith(name + " "));
  assert(line, name);
  return Number(line.slice(name.length + 1));
}

Deno.test("a cached archive changed on disk is not served: the fingerprint fails, it is fetched again", async () => {
  const big = await bigZip();
  await using t = await mirrorFixture({
    providers: TWO_PROVIDERS,
    registry: { zipOverride: (f, z) => f.includes("alpha_1.0.0_linux_amd64") ? big : z },
    config: { backgroundVerify: { rate: 0 } },
  });
  const a = t.fake.archive("alpha", "1.0.0", "linux_amd64");
  assertEquals(a.bytes.length, big.length);
  const url = `/${H}/example/alpha/${a.filename}`;
  await bytesOf(await t.get(url));
  await t.app.settle();
  const zipGets = () => t.fake.count((r) => r.server === "release" && r.path.endsWith(".zip"));
  const perDownload = zipGets();
  const hit = await t.get(url);
  assertEquals(hit.headers.get("x-repoxy-cache"), "hit");
  await bytesOf(hit);

  // Same size, changed near the end (inside the last 64 KiB).
  const stored = join(t.dir.path, "packages", H, "example", "alpha", a.filename);
  await overwrite(stored, big.length - 1000, new Uint8Array(16).fill(0xee));
  const res = await t.get(url);
  assertEquals(res.headers.get("x-repoxy-cache"), "miss");
  assertEquals(sha256Hex(await bytesOf(res)), a.sha256);
  await t.app.settle();
  assertEquals(zipGets(), 2 * perDownload, "fetched once more");
  assert(
    t.log.records.some((r) => String(r.msg).includes("does not match its recorded fingerprint")),
    "logged",
  );
  assertEquals(sha256Hex(await Deno.readFile(stored)), a.sha256, "the good copy is stored");
  const again = await t.get(url);
  assertEquals(again.headers.get("x-repoxy-cache"), "hit");
  assertEquals(sha256Hex(await bytesOf(again)), a.sha256);
});

Deno.test("the background check re-hashes at the configured rate, quarantines rot, counts it, and stops on close", async () => {
  const big = await bigZip();
  /** Long waits (first-pass delay, interval, inventory watch) wait for the test or for close. */
  const held: Array<{ ms: number; release: () => void }> = [];
  /** Pacing waits are recorded and return at once. */
  const paced: number[] = [];
  const RATE = 100 * 1024;
  /** A clock that pacing waits move forward, as real waits would. */
  let skew = 0;
  const t = await mirrorFixture({
    providers: TWO_PROVIDERS,
    registry: { zipOverride: (f, z) => f.includes("alpha_1.0.0_linux_amd64") ? big : z },
    config: { backgroundVerify: { rate: RATE, interval: "1h" } },
    deps: {
      now: () => Date.now() + skew,
      backgroundSleep: (ms, signal) => {
        if (ms < 5_000) {
          paced.push(ms);
          skew += ms;
          return Promise.resolve();
        }
        return new Promise<void>((r) => {
          held.push({ ms, release: r });
          signal.addEventListener("abort", () => r(), { once: true });
        });
      },
    },
  });
  let closed = false;
  try {
    const a = t.fake.archive("alpha", "1.0.0", "linux_amd64");
    const b = t.fake.archive("beta", "2.3.4", "linux_amd64");
    for (const x of [a, b]) await bytesOf(await t.get(`/${H}/example/${x.type}/${x.filename}`));
    await t.app.settle();
    const zipGets = () => t.fake.count((r) => r.server === "release" && r.path.endsWith(".zip"));
    const before = zipGets();

    // Rot in the middle: same size, first and last 64 KiB intact, so only a
    // full re-hash can tell.
    const stored = join(t.dir.path, "packages", H, "example", "alpha", a.filename);
    await overwrite(stored, 200 * 1024, new Uint8Array(8).fill(0x55));
    const fooled = await t.get(`/${H}/example/alpha/${a.filename}`);
    assertEquals(fooled.headers.get("x-repoxy-cache"), "hit", "the fingerprint cannot see it");
    await fooled.body?.cancel();

    // A good archive's access time (what prune evicts by) is not a use.
    const good = join(t.dir.path, "packages", H, "example", "beta", b.filename);
    const old = new Date(Date.now() - 86_400_000 * 30);
    await Deno.utime(good, old, (await Deno.stat(good)).mtime!);

    // The loop waits FIRST_PASS_DELAY_MS before its first pass; let it go.
    const first = held.find((h) => h.ms === FIRST_PASS_DELAY_MS);
    assert(first, `the first pass is scheduled after ${FIRST_PASS_DELAY_MS} ms`);
    first.release();
    while (t.app.verifier.stats.passes < 1) await new Promise((r) => setTimeout(r, 5));

    const stats = t.app.verifier.stats;
    assertEquals(stats.bad, 1);
    assertEquals(
      (await Deno.stat(good)).atime?.getTime(),
      old.getTime(),
      "re-hashing is not a use",
    );
    assertEquals(stats.archives, 2);
    assertEquals(stats.bytes, a.bytes.length + b.bytes.length);
    // Paced: the waits add up to (nearly) bytes / rate.
    const waited = paced.reduce((n, x) => n + x, 0);
    const due = (stats.bytes / RATE) * 1000;
    assert(
      waited >= due * 0.5 && waited <= due * 1.01,
      `waited ${waited} ms for ${due} ms of reading`,
    );
    // Next pass one interval after this one started.
    const next = held.filter((h) => h !== first && h.ms > 5_000);
    assertEquals(next.length, 1);
    assert(next[0]!.ms > 3_500_000 && next[0]!.ms <= 3_600_000, `next pass in ${next[0]!.ms} ms`);

    assertEquals(
      await metric(await t.get("/-/metrics"), "repoxy_background_verify_bad_archives"),
      1,
    );
    assertEquals(await metric(await t.get("/-/metrics"), "repoxy_cache_archives"), 1);
    const quarantined = await Array.fromAsync(
      Deno.readDir(join(t.dir.path, "quarantine", H, "example", "alpha")),
    );
    assertEquals(quarantined.length, 2, "the file and its note");
    const res = await t.get(`/${H}/example/alpha/${a.filename}`);
    assertEquals(res.headers.get("x-repoxy-cache"), "miss");
    assertEquals(sha256Hex(await bytesOf(res)), a.sha256);
    await t.app.settle();
    assertEquals(zipGets() - before, before / 2, "fetched once more");

    // close() stops the loop (it is waiting for the next interval).
    await t[Symbol.asyncDispose]();
    closed = true;
    assertEquals(t.app.verifier.stats.passes, 1);
  } finally {
    if (!closed) await t[Symbol.asyncDispose]();
  }
});
