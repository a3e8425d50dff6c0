/**
 * Issue 10, row 7: the `h1:` computation is bounded by the archive's declared
 * sizes, yields to the event loop, and is abandoned at shutdown. The attack:
 * a correctly signed ~1.1 MB archive with 20,000 central-directory entries
 * that all point at one 8 MiB deflate stream (overlapping local headers),
 * which inflates 160 GiB when hashed naively.
 * @module
 */
import { assert, assertEquals, assertMatch } from "../lib/deps/assert.ts";
import { hashZipH1, type HashZipOptions } from "../lib/integrity/dirhash.ts";
import { type ZipFile, ZipFormatError } from "../lib/integrity/zip_reader.ts";
import { bytesOf, jsonOf, mirrorFixture, sha256Hex, tempDir } from "./_helpers.ts";
import { openCacheDir } from "../lib/cache/cache_dir.ts";
import { memoryLogger } from "../lib/base/log.ts";
import { crc32, deflateRaw, makeZip } from "./_zip.ts";

const H = "registry.terraform.io";
const KERNEL_BYTES = 8 * 2 ** 20;

/**
 * The overlapping zip bomb: one local header and one deflate stream of 8 MiB
 * of zeros, and `entries` central-directory records (distinct names) that
 * all point at it.
 */
async function overlappingBomb(entries: number): Promise<Uint8Array> {
  const raw = new Uint8Array(KERNEL_BYTES);
  const body = await deflateRaw(raw);
  const crc = crc32(raw);
  const enc = new TextEncoder();
  const localName = enc.encode("k");
  const local = new Uint8Array(30 + localName.length);
  const lv = new DataView(local.buffer);
  lv.setUint32(0, 0x04034b50, true);
  lv.setUint16(4, 20, true);
  lv.setUint16(8, 8, true);
  lv.setUint32(14, crc, true);
  lv.setUint32(18, body.length, true);
  lv.setUint32(22, raw.length, true);
  lv.setUint16(26, localName.length, true);
  local.set(localName, 30);
  const records: Uint8Array[] = [];
  for (let i = 0; i < entries; i++) {
    const name = enc.encode(`f${i.toString().padStart(5, "0")}`);
    const cd = new Uint8Array(46 + name.length);
    const cv = new DataView(cd.buffer);
    cv.setUint32(0, 0x02014b50, true);
    cv.setUint16(4, 0x0314, true);
    cv.setUint16(6, 20, true);
    cv.setUint16(10, 8, true);
    cv.setUint32(16, crc, true);
    cv.setUint32(20, body.length, true);
    cv.setUint32(24, raw.length, true);
    cv.setUint16(28, name.length, true);
    cv.setUint32(42, 0, true); // every entry: the same local header
    cd.set(name, 46);
    records.push(cd);
  }
  const cdSize = records.reduce((n, r) => n + r.length, 0);
  const cdOffset = local.length + body.length;
  const eocd = new Uint8Array(22);
  const ev = new DataView(eocd.buffer);
  ev.setUint32(0, 0x06054b50, true);
  ev.setUint16(8, entries & 0xffff, true);
  ev.setUint16(10, entries & 0xffff, true);
  ev.setUint32(12, cdSize, true);
  ev.setUint32(16, cdOffset, true);
  const out = new Uint8Array(cdOffset + cdSize + eocd.length);
  out.set(local, 0);
  out.set(body, local.length);
  let at = cdOffset;
  for (const r of records) {
    out.set(r, at);
    at += r.length;
  }
  out.set(eocd, at);
  return out;
}

/** The error `p` rejects with (fails when it resolves). */
async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error("expected a rejection");
}

/**
 * An in-memory archive that counts the bytes read from it, and refuses to
 * read more than `maxReads` (so unbounded code fails here within a second
 * instead of running for minutes).
 */
function countingZip(bytes: Uint8Array, maxReads = Infinity) {
  let pos = 0;
  const stats = { read: 0 };
  const file: ZipFile = {
    read(buf) {
      if (pos >= bytes.length) return Promise.resolve(null);
      const n = Math.min(buf.length, bytes.length - pos);
      stats.read += n;
      if (stats.read > maxReads) {
        return Promise.reject(new Error(`runaway: read ${stats.read} bytes`));
      }
      buf.set(bytes.subarray(pos, pos + n));
      pos += n;
      return Promise.resolve(n);
    },
    seek(offset) {
      pos = offset;
      return Promise.resolve(pos);
    },
    stat: () => Promise.resolve({ size: bytes.length }),
  };
  return { file, stats };
}

const bomb = await overlappingBomb(20_000);

Deno.test("h1: refuses the overlapping zip bomb (1.1 MB declaring 160 GB) after reading only its directory", async () => {
  assert(bomb.length > 1_000_000 && bomb.length < 1_300_000, `${bomb.length} bytes`);
  assert(20_000 * KERNEL_BYTES > 160e9);
  const { file, stats } = countingZip(bomb, 2 * bomb.length);
  const err = await rejection(hashZipH1(file));
  assert(err instanceof ZipFormatError, String(err));
  // 20,000 records pass the entry bound, which is checked while reading.
  assertMatch(err.message, /entries \(bound 10000\); refusing a zip bomb/);
  // The central directory and the end record, not 20,000 passes over the stream.
  assert(stats.read <= bomb.length + 128 * 1024, `read ${stats.read} bytes`);
  // Under the entry bound, the overlap itself is what refuses it.
  const small = await overlappingBomb(5_000);
  const err2 = await rejection(hashZipH1(countingZip(small, 2 * small.length).file));
  assertMatch(String(err2), /overlap.*refusing a zip bomb/);
});

Deno.test("h1: refuses a declared total absurd for the archive size, even without overlap", async () => {
  // Two honest-looking entries whose sizes claim 2 x 3 GiB from a 1 KB file.
  const zip = await makeZip([
    { name: "a", data: "x".repeat(300), method: "deflate" },
    { name: "b", data: "y".repeat(300), method: "deflate" },
  ]);
  const dv = new DataView(zip.buffer);
  // Patch the uncompressed size of both central records (the directory
  // starts after both local entries).
  const eocd = zip.length - 22;
  let cd = dv.getUint32(eocd + 16, true);
  for (let i = 0; i < 2; i++) {
    dv.setUint32(cd + 24, 3 * 2 ** 30, true);
    cd += 46 + dv.getUint16(cd + 28, true);
  }
  const { file, stats } = countingZip(zip, 1e6);
  const err = await rejection(hashZipH1(file));
  assert(err instanceof ZipFormatError, String(err));
  assertMatch(err.message, /declares 6442450944 bytes uncompressed.*refusing a zip bomb/);
  assert(stats.read <= zip.length * 2);
});

Deno.test("h1: an aborted signal abandons the job at its next chunk", async () => {
  // A legitimate 40 MiB entry of zeros (well inside the bounds).
  const zip = await makeZip([{
    name: "terraform-provider-z_v1.0.0",
    data: new Uint8Array(40 * 2 ** 20),
    method: "deflate",
  }]);
  const ac = new AbortController();
  const { file } = countingZip(zip);
  let chunks = 0;
  const opts: HashZipOptions = { signal: ac.signal };
  const hashing = hashZipH1(file, opts);
  // Abort once the job is under way (after a couple of event-loop turns).
  const ticker = setInterval(() => {
    if (++chunks === 2) ac.abort(new Error("shutting down"));
  }, 0);
  try {
    const err = await rejection(hashing);
    assertMatch(String(err), /shutting down/);
  } finally {
    clearInterval(ticker);
  }
  // Same archive, no abort: it does hash (the bounds do not reject it).
  const done = await hashZipH1(countingZip(zip).file);
  assertMatch(done, /^h1:/);
});

Deno.test("h1: the cache's jobs are abandoned at shutdown (abortH1Jobs), and later ones too", async () => {
  const zip = await makeZip([{ name: "terraform-provider-z_v1.0.0", data: new Uint8Array(1024) }]);
  await using dir = await tempDir();
  await using cache = await openCacheDir(dir.path, memoryLogger());
  const p = { hostname: H, namespace: "example", type: "z" };
  const pl = { os: "linux", arch: "amd64" };
  const commit = async (version: string) => {
    const tmp = cache.storage.tempPath("z.zip");
    await Deno.writeFile(tmp, zip);
    await cache.packages.commit(p, version, pl, tmp, {
      sha256: sha256Hex(zip),
      size: zip.length,
      cachedAt: 1,
      url: "https://x/z.zip",
    });
  };
  await commit("1.0.0");
  await commit("2.0.0");
  const running = cache.packages.ensureH1(p, "1.0.0", pl);
  cache.packages.abortH1Jobs();
  assertMatch(String(await rejection(running)), /shutting down/);
  assertMatch(String(await rejection(cache.packages.ensureH1(p, "2.0.0", pl))), /shutting down/);
  assertEquals((await cache.packages.readMeta(p, "1.0.0", pl))?.h1, undefined);
});

Deno.test("h1: a long job lets timers run while it works", async () => {
  const zip = await makeZip([{
    name: "terraform-provider-z_v1.0.0",
    data: new Uint8Array(48 * 2 ** 20),
    method: "deflate",
  }]);
  let ticks = 0;
  const ticker = setInterval(() => ticks++, 0);
  try {
    // An in-memory file never waits for I/O: only the job's own yields let
    // the timer fire.
    await hashZipH1(countingZip(zip).file);
  } finally {
    clearInterval(ticker);
  }
  assert(ticks >= 3, `the timer fired ${ticks} times during the job`);
});

Deno.test("end to end: a correctly signed zip bomb is served and cached, listed without h1:, and costs no inflating", async () => {
  const FILE = "terraform-provider-alpha_1.0.0_linux_amd64.zip";
  await using t = await mirrorFixture({
    providers: [{
      namespace: "example",
      type: "alpha",
      versions: [{ version: "1.0.0", platforms: ["linux_amd64"] }],
    }],
    registry: { zipOverride: (name, zip) => name === FILE ? bomb : zip },
  });
  const res = await t.get(`/${H}/example/alpha/${FILE}`);
  assertEquals(sha256Hex(await bytesOf(res)), sha256Hex(bomb));
  await t.app.settle();
  const doc = await jsonOf(await t.get(`/${H}/example/alpha/1.0.0.json`)) as {
    archives: Record<string, { hashes: string[] }>;
  };
  await t.app.settle();
  const hashes = doc.archives["linux_amd64"]!.hashes;
  assertEquals(hashes, [`zh:${sha256Hex(bomb)}`]);
  const warned = t.log.records.find((r) => r.msg === "cannot compute h1 of cached archive");
  assert(warned);
  assertMatch(String(warned.error), /(overlap|entries \(bound 10000\)).*refusing a zip bomb/);
  // The archive itself stays served from the cache.
  const hit = await t.get(`/${H}/example/alpha/${FILE}`);
  assertEquals(hit.headers.get("x-repoxy-cache"), "hit");
  assertEquals((await bytesOf(hit)).length, bomb.length);
});
