/**
 * Deflated entries end where Go's flate reader ends them, at the final block,
 * and inflating stays bounded: output in chunks of at most 64 KiB, disk read
 * only as output is pulled, and nothing read after the final block.
 * @module
 */
import { assert, assertEquals, assertRejects } from "../lib/deps/assert.ts";
import { createHash } from "../lib/deps/crypto.ts";
import { join } from "../lib/deps/path.ts";
import { hashZipH1 } from "../lib/integrity/dirhash.ts";
import { OUTPUT_CHUNK } from "../lib/integrity/zip_inflate.ts";
import {
  openZipEntry,
  readZipEntries,
  type ZipFile,
  ZipFormatError,
} from "../lib/integrity/zip_reader.ts";
import { buildZip } from "./_zip_corpus.ts";
import { tempDir } from "./_helpers.ts";

const enc = new TextEncoder();

/** An open archive that counts the bytes read from it. */
async function counted(
  dir: string,
  bytes: Uint8Array,
): Promise<ZipFile & Disposable & { read_: number }> {
  const path = join(dir, `${crypto.randomUUID()}.zip`);
  await Deno.writeFile(path, bytes);
  const file = await Deno.open(path);
  const z = {
    read_: 0,
    async read(buf: Uint8Array) {
      const n = await file.read(buf);
      if (n) z.read_ += n;
      return n;
    },
    seek: (o: number, w: Deno.SeekMode) => file.seek(o, w),
    stat: () => file.stat(),
    [Symbol.dispose]: () => file.close(),
  };
  return z;
}

function sha256(b: Uint8Array): string {
  return createHash("sha256").update(b).digest("hex");
}

Deno.test("bytes after the final deflate block are neither read nor an error, as in Go", async () => {
  await using dir = await tempDir();
  const text = "provider binary stand-in\n".repeat(4000);
  const junk = new Uint8Array(4 * 2 ** 20).fill(0xa5);
  const zip = await buildZip([{ name: "a", data: text, method: 8, trailing: junk }]);
  using file = await counted(dir.path, zip);
  const [entry] = await readZipEntries(file);
  assert(entry && entry.compressedSize > junk.length);
  const before = file.read_;
  const h = createHash("sha256");
  for await (const chunk of openZipEntry(file, entry)) h.update(chunk);
  assertEquals(h.digest("hex"), sha256(enc.encode(text)));
  // The compressed stream is a few KiB; the 4 MiB after it stays on disk.
  assert(file.read_ - before < 512 * 1024, `read ${file.read_ - before} bytes`);

  // The same archive hashes (Go gives it an h1:, tests/zip_go_oracle_test.ts).
  const path = join(dir.path, "junk.zip");
  await Deno.writeFile(path, zip);
  assert((await hashZipH1(path)).startsWith("h1:"));
});

Deno.test("a highly compressed entry comes out in bounded chunks, pulled from disk as it is read", async () => {
  await using dir = await tempDir();
  const zeros = new Uint8Array(48 * 2 ** 20); // deflates ~1000x
  const zip = await buildZip([{ name: "zeros", data: zeros, method: 8 }]);
  assert(zip.length < 200 * 1024);
  using file = await counted(dir.path, zip);
  const [entry] = await readZipEntries(file);
  const reader = openZipEntry(file, entry!).getReader();
  const first = await reader.read();
  assert(!first.done && first.value.length <= OUTPUT_CHUNK);
  // One pull needed at most one disk chunk, not the whole entry.
  assert(file.read_ <= 2 * 256 * 1024, `read ${file.read_} bytes for the first chunk`);
  let total = first.value.length;
  let largest = first.value.length;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.length;
    largest = Math.max(largest, value.length);
  }
  assertEquals(total, zeros.length);
  assert(largest <= OUTPUT_CHUNK, `a chunk of ${largest} bytes`);
});

Deno.test("a deflate stream cut short or not deflate at all is a ZipFormatError", async () => {
  await using dir = await tempDir();
  const text = "provider binary stand-in\n".repeat(4000);
  const whole = await buildZip([{ name: "a", data: text, method: 8 }]);
  const compressed = whole.subarray(31, 31 + 200); // the first bytes of the stream
  for (
    const body of [compressed, Uint8Array.from({ length: 64 }, (_, i) => (i * 37 + 11) & 0xff)]
  ) {
    const zip = await buildZip([{ name: "a", data: text, method: 8, body }]);
    using file = await counted(dir.path, zip);
    const [entry] = await readZipEntries(file);
    await assertRejects(
      async () => {
        for await (const _ of openZipEntry(file, entry!)) { /* drain */ }
      },
      ZipFormatError,
      "invalid deflate data",
    );
  }
});

Deno.test("cancelling a deflated entry midway releases the inflater", async () => {
  await using dir = await tempDir();
  const zip = await buildZip([{ name: "z", data: new Uint8Array(8 * 2 ** 20), method: 8 }]);
  using file = await counted(dir.path, zip);
  const [entry] = await readZipEntries(file);
  const reader = openZipEntry(file, entry!).getReader();
  assert(!(await reader.read()).done);
  await reader.cancel();
  const readSoFar = file.read_;
  await new Promise((r) => setTimeout(r, 20));
  assertEquals(file.read_, readSoFar, "nothing is read after the cancel");
});
