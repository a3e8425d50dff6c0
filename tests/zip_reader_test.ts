import { assert, assertEquals, assertRejects } from "../lib/deps/assert.ts";
import {
  openZipEntry,
  readZipEntries,
  type ZipEntry,
  zipEntryNameBytes,
  ZipFormatError,
} from "../lib/integrity/zip_reader.ts";
import { crc32, makeZip } from "./_zip.ts";
import { buildZip, noise } from "./_zip_corpus.ts";

const enc = new TextEncoder();

/** Writes `bytes` to a temp file and hands an open handle to `fn`. */
async function withZip<T>(
  bytes: Uint8Array,
  fn: (file: Deno.FsFile) => Promise<T>,
): Promise<T> {
  const path = await Deno.makeTempFile({ prefix: "zip_reader_test_", suffix: ".zip" });
  try {
    await Deno.writeFile(path, bytes);
    const file = await Deno.open(path, { read: true });
    try {
      return await fn(file);
    } finally {
      file.close();
    }
  } finally {
    await Deno.remove(path);
  }
}

async function readAll(stream: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** Validator for assertRejects: a ZipFormatError whose message matches. */
function zipError(pattern: RegExp): (err: unknown) => boolean {
  return (err) => {
    assert(err instanceof ZipFormatError, `expected ZipFormatError, got ${err}`);
    assertEquals(err.name, "ZipFormatError");
    assert(pattern.test(err.message), `message ${JSON.stringify(err.message)} !~ ${pattern}`);
    return true;
  };
}

/** Offset of the first central-directory header of a makeZip archive. */
function centralOffset(zip: Uint8Array): number {
  return new DataView(zip.buffer, zip.byteOffset).getUint32(zip.length - 6, true);
}

function patch(zip: Uint8Array, at: number, value: number, bytes: 2 | 4): Uint8Array {
  const copy = zip.slice();
  const dv = new DataView(copy.buffer);
  if (bytes === 2) dv.setUint16(at, value, true);
  else dv.setUint32(at, value, true);
  return copy;
}

Deno.test("readZipEntries lists stored and deflated entries with their metadata", async () => {
  const big = noise(300_000);
  const zip = await makeZip([
    { name: "hello.txt", data: "hello, world\n" },
    { name: "dir/big.bin", data: big, method: "deflate" },
    { name: "dir/", data: "" },
  ]);
  await withZip(zip, async (file) => {
    const entries = await readZipEntries(file);
    assertEquals(entries.map((e) => e.name), ["hello.txt", "dir/big.bin", "dir/"]);
    const [hello, bin] = entries as [ZipEntry, ZipEntry, ZipEntry];
    assertEquals(hello, {
      name: "hello.txt",
      method: 0,
      compressedSize: 13,
      uncompressedSize: 13,
      crc32: crc32(enc.encode("hello, world\n")),
      localHeaderOffset: 0,
      flags: 0x800,
    });
    assertEquals(bin.method, 8);
    assertEquals(bin.uncompressedSize, big.length);
    assertEquals(bin.crc32, crc32(big));
    assertEquals(bin.localHeaderOffset, 30 + 9 + 13);
  });
});

Deno.test("openZipEntry round-trips stored and deflated content across many chunks", async () => {
  const text = enc.encode("provider binary ".repeat(80_000)); // ~1.3 MB, compresses well
  const random = noise(700_000, 7); // several 256 KiB reads
  const zip = await makeZip([
    { name: "stored.bin", data: random },
    { name: "deflated.txt", data: text, method: "deflate" },
    { name: "deflated.bin", data: random, method: "deflate" },
    { name: "empty", data: "" },
    { name: "empty-deflated", data: "", method: "deflate" },
  ]);
  await withZip(zip, async (file) => {
    const entries = await readZipEntries(file);
    const want = [random, text, random, new Uint8Array(0), new Uint8Array(0)];
    for (const [i, entry] of entries.entries()) {
      assertEquals(await readAll(openZipEntry(file, entry)), want[i], entry.name);
    }
  });
});

Deno.test("openZipEntry streams several entries of one handle concurrently", async () => {
  const a = noise(600_000, 3);
  const b = noise(500_000, 4);
  const zip = await makeZip([
    { name: "a", data: a, method: "deflate" },
    { name: "b", data: b },
  ]);
  await withZip(zip, async (file) => {
    const [ea, eb] = (await readZipEntries(file)) as [ZipEntry, ZipEntry];
    const [ga, gb] = await Promise.all([
      readAll(openZipEntry(file, ea)),
      readAll(openZipEntry(file, eb)),
    ]);
    assertEquals(ga, a);
    assertEquals(gb, b);
  });
});

Deno.test("openZipEntry pulls lazily and can be cancelled midway without leaks", async () => {
  const data = noise(2_000_000, 5);
  const zip = await makeZip([
    { name: "deflated", data, method: "deflate" },
    { name: "stored", data },
  ]);
  await withZip(zip, async (file) => {
    for (const entry of await readZipEntries(file)) {
      // Opening without reading must not touch the file.
      await openZipEntry(file, entry).cancel();
      const reader = openZipEntry(file, entry).getReader();
      const first = await reader.read();
      assert(!first.done && first.value.length > 0 && first.value.length < data.length);
      await reader.cancel();
    }
  });
});

Deno.test("directory entries yield no bytes, and content in one is an error", async () => {
  const zip = await buildZip([
    { name: "docs/", data: new Uint8Array(0) },
    { name: "bad/", data: enc.encode("x") },
  ]);
  await withZip(zip, async (file) => {
    const [docs, bad] = (await readZipEntries(file)) as [ZipEntry, ZipEntry];
    assertEquals((await readAll(openZipEntry(file, docs))).length, 0);
    await assertRejects(() => readAll(openZipEntry(file, bad)), zipError(/directory entry/));
  });
});

Deno.test("a CRC-32 mismatch in stored data errors the stream", async () => {
  const zip = await makeZip([{ name: "a.txt", data: "some stored content\n" }]);
  const bad = zip.slice();
  bad[30 + 5 + 3]! ^= 0x01; // a byte of a.txt's data
  await withZip(bad, async (file) => {
    const [entry] = (await readZipEntries(file)) as [ZipEntry];
    await assertRejects(() => readAll(openZipEntry(file, entry)), zipError(/CRC-32 mismatch/));
  });
});

Deno.test("a CRC-32 mismatch in deflated data errors the stream", async () => {
  const zip = await makeZip([{ name: "a", data: noise(400_000), method: "deflate" }]);
  const bad = patch(zip, centralOffset(zip) + 16, 0x12345678, 4);
  await withZip(bad, async (file) => {
    const [entry] = (await readZipEntries(file)) as [ZipEntry];
    await assertRejects(() => readAll(openZipEntry(file, entry)), zipError(/CRC-32 mismatch/));
  });
});

Deno.test("corrupt deflate data is a ZipFormatError", async () => {
  const zip = await makeZip([{ name: "a", data: "x".repeat(5000), method: "deflate" }]);
  const bad = zip.slice();
  bad.fill(0xff, 31, 40); // inside the deflate stream
  await withZip(bad, async (file) => {
    const [entry] = (await readZipEntries(file)) as [ZipEntry];
    await assertRejects(() => readAll(openZipEntry(file, entry)), zipError(/"a"/));
  });
});

Deno.test("content longer or shorter than the declared size is an error", async () => {
  const zip = await makeZip([{ name: "a", data: "0123456789", method: "deflate" }]);
  for (const size of [9, 11]) {
    await withZip(patch(zip, centralOffset(zip) + 24, size, 4), async (file) => {
      const [entry] = (await readZipEntries(file)) as [ZipEntry];
      await assertRejects(
        () => readAll(openZipEntry(file, entry)),
        zipError(size < 10 ? /more than its declared 9 bytes/ : /holds 10 bytes but declares 11/),
      );
    });
  }
});

Deno.test("the encryption flag is ignored as Go ignores it; unknown methods are rejected", async () => {
  const zip = await makeZip([{ name: "secret", data: "not really encrypted" }]);
  const cd = centralOffset(zip);
  // Go's archive/zip reads the bytes as they are (tests/zip_go_oracle_test.ts).
  await withZip(patch(zip, cd + 8, 0x801, 2), async (file) => {
    const [entry] = (await readZipEntries(file)) as [ZipEntry];
    assertEquals(entry.flags & 1, 1);
    assertEquals(await readAll(openZipEntry(file, entry)), enc.encode("not really encrypted"));
  });
  // Really encrypted bytes fail the CRC-32 of the plain content.
  const scrambled = zip.slice();
  scrambled[30 + "secret".length] = scrambled[30 + "secret".length]! ^ 0x5a;
  await withZip(patch(scrambled, cd + 8, 0x801, 2), async (file) => {
    const [entry] = (await readZipEntries(file)) as [ZipEntry];
    await assertRejects(() => readAll(openZipEntry(file, entry)), zipError(/CRC-32 mismatch/));
  });
  await withZip(patch(zip, cd + 10, 12, 2), async (file) => {
    const [entry] = (await readZipEntries(file)) as [ZipEntry];
    await assertRejects(() => readAll(openZipEntry(file, entry)), zipError(/method 12/));
  });
});

Deno.test("data descriptors are checked against the central directory", async () => {
  const data = enc.encode("described later\n");
  const zip = await buildZip([
    { name: "signed", data, method: 8, descriptor: "signed" },
    { name: "unsigned", data, descriptor: "unsigned" },
    { name: "wrong", data, descriptor: "signed", descriptorCrc: 0xdeadbeef },
  ]);
  await withZip(zip, async (file) => {
    const [signed, unsigned, wrong] = (await readZipEntries(file)) as [
      ZipEntry,
      ZipEntry,
      ZipEntry,
    ];
    assertEquals(await readAll(openZipEntry(file, signed)), data);
    assertEquals(await readAll(openZipEntry(file, unsigned)), data);
    await assertRejects(() => readAll(openZipEntry(file, wrong)), zipError(/data descriptor/));
  });
});

Deno.test("a zero CRC without a data descriptor is not checked, as in Go", async () => {
  const zip = await buildZip([{ name: "a", data: enc.encode("abc"), crc: 0 }]);
  await withZip(zip, async (file) => {
    const [entry] = (await readZipEntries(file)) as [ZipEntry];
    assertEquals(await readAll(openZipEntry(file, entry)), enc.encode("abc"));
  });
});

Deno.test("local header lengths may differ from the central directory", async () => {
  const data = enc.encode("payload");
  const zip = await buildZip([
    { name: "a", data, localExtra: new Uint8Array([0xfe, 0xca, 3, 0, 1, 2, 3]) },
  ]);
  await withZip(zip, async (file) => {
    const [entry] = (await readZipEntries(file)) as [ZipEntry];
    assertEquals(await readAll(openZipEntry(file, entry)), data);
  });
});

Deno.test("comments and bytes after the end record are tolerated", async () => {
  const zip = await buildZip([{ name: "a", data: enc.encode("x") }], {
    comment: "PK\x05\x06 looks like a signature",
  });
  await withZip(new Uint8Array([...zip, 0, 0, 0]), async (file) => {
    assertEquals((await readZipEntries(file)).map((e) => e.name), ["a"]);
  });
});

Deno.test("data prepended to an archive shifts its offsets, as in Go", async () => {
  const zip = await makeZip([
    { name: "a", data: "first" },
    { name: "b", data: "second entry", method: "deflate" },
  ]);
  const stub = enc.encode("#!/bin/sh\necho self-extracting stub\nexit 0\n");
  await withZip(new Uint8Array([...stub, ...zip]), async (file) => {
    const entries = await readZipEntries(file);
    assertEquals(entries[0]!.localHeaderOffset, stub.length);
    const got = await Promise.all(entries.map((e) => readAll(openZipEntry(file, e))));
    assertEquals(got, [enc.encode("first"), enc.encode("second entry")]);
  });
  // Bytes between the directory and its end record look like a shift too, but
  // the recorded offset still points at a directory header, so it is kept.
  const eocd = zip.length - 22;
  const gap = new Uint8Array([
    ...zip.subarray(0, eocd),
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    ...zip.subarray(eocd),
  ]);
  await withZip(gap, async (file) => {
    const entries = await readZipEntries(file);
    assertEquals(entries.map((e) => e.localHeaderOffset), [0, 30 + 1 + 5]);
    assertEquals(await readAll(openZipEntry(file, entries[1]!)), enc.encode("second entry"));
  });
});

Deno.test("ZIP64 end records and extra fields are read", async () => {
  const big = noise(300_000, 9);
  const small = enc.encode("zip64 entry\n");
  const zip = await buildZip([
    { name: "all-three", data: big, method: 8, zip64: ["size", "csize", "offset"] },
    { name: "offset-only", data: small, zip64: ["offset"] },
    { name: "sizes-only", data: small, method: 8, zip64: ["size", "csize"] },
    { name: "plain", data: small },
  ], { zip64End: true });
  await withZip(zip, async (file) => {
    const entries = await readZipEntries(file);
    assertEquals(entries.map((e) => e.name), ["all-three", "offset-only", "sizes-only", "plain"]);
    const [first, second] = entries as [ZipEntry, ZipEntry];
    assertEquals(first.uncompressedSize, big.length);
    assertEquals(first.localHeaderOffset, 0);
    assert(first.compressedSize > 0 && first.compressedSize !== 0xffffffff);
    assertEquals(second.localHeaderOffset, 30 + 9 + first.compressedSize);
    assertEquals(second.uncompressedSize, small.length);
    const want = [big, small, small, small];
    for (const [i, e] of entries.entries()) {
      assertEquals(await readAll(openZipEntry(file, e)), want[i], e.name);
    }
  });
});

Deno.test("ZIP64 damage is a ZipFormatError", async () => {
  const zip = await buildZip([{ name: "a", data: enc.encode("x") }], { zip64End: true });
  // The locator's record offset (8 bytes after its signature) points past it.
  const locator = zip.length - 22 - 20;
  await withZip(patch(zip, locator + 8, zip.length, 4), async (file) => {
    await assertRejects(() => readZipEntries(file), zipError(/zip64/));
  });
  // Overflow markers without the zip64 extra field to resolve them.
  const plain = await buildZip([{ name: "a", data: enc.encode("x") }]);
  const cd = new DataView(plain.buffer).getUint32(plain.length - 6, true);
  await withZip(patch(plain, cd + 42, 0xffffffff, 4), async (file) => {
    await assertRejects(() => readZipEntries(file), zipError(/no zip64 extra field/));
  });
});

Deno.test("garbage and truncated files throw ZipFormatError", async () => {
  const zip = await makeZip([
    { name: "a.txt", data: "aaaa" },
    { name: "b.txt", data: noise(5000), method: "deflate" },
  ]);
  const cd = centralOffset(zip);
  const cases: Array<[string, Uint8Array, RegExp]> = [
    ["empty file", new Uint8Array(0), /only 0 bytes/],
    ["tiny file", enc.encode("PK"), /only 2 bytes/],
    ["random bytes", noise(200_000, 11), /no end of central directory/],
    ["cut in half", zip.subarray(0, zip.length >> 1), /no end of central directory/],
    ["last byte missing", zip.subarray(0, zip.length - 1), /no end of central directory/],
    // A wrong directory offset reads as data prepended with a negative length.
    ["directory past the end", patch(zip, zip.length - 6, zip.length, 4), /offset -\d+, outside/],
    ["huge directory", patch(zip, zip.length - 10, 0xfffffff0, 4), /lies outside/],
    [
      "overstated directory size",
      patch(zip, zip.length - 10, zip.length - 22 - cd + 10, 4),
      /0 readable/,
    ],
    ["wrong entry count", patch(zip, zip.length - 12, 3, 2), /2 readable entries .* says 3/],
    ["bad central signature", patch(zip, cd, 0x12345678, 4), /0 readable entries/],
    ["local header past the end", patch(zip, cd + 42, zip.length, 4), /outside the/],
  ];
  for (const [what, bytes, pattern] of cases) {
    await withZip(bytes, async (file) => {
      await assertRejects(() => readZipEntries(file), zipError(pattern), what);
    });
  }
});

Deno.test("damaged entry data throws ZipFormatError when read", async () => {
  const zip = await makeZip([{ name: "a.txt", data: "aaaa" }]);
  const cd = centralOffset(zip);
  const cases: Array<[string, Uint8Array, RegExp]> = [
    ["no local header", patch(zip, 0, 0x12345678, 4), /no local file header/],
    ["data past the end", patch(zip, cd + 20, 1_000_000, 4), /unexpected end of file/],
  ];
  for (const [what, bytes, pattern] of cases) {
    await withZip(bytes, async (file) => {
      const [entry] = (await readZipEntries(file)) as [ZipEntry];
      await assertRejects(() => readAll(openZipEntry(file, entry)), zipError(pattern), what);
    });
  }
});

Deno.test("names decode as UTF-8 and the raw bytes stay available", async () => {
  const latin1 = new Uint8Array([0x63, 0x61, 0x66, 0xe9]); // "café" in Latin-1
  const bom = new Uint8Array([0xef, 0xbb, 0xbf, 0x78]);
  const zip = await buildZip([
    { name: "ünï/😀", data: new Uint8Array(0) },
    { name: latin1, data: new Uint8Array(0) },
    { name: bom, data: new Uint8Array(0) },
  ]);
  await withZip(zip, async (file) => {
    const [utf8, bad, withBom] = (await readZipEntries(file)) as [ZipEntry, ZipEntry, ZipEntry];
    assertEquals(utf8.name, "ünï/😀");
    assertEquals(zipEntryNameBytes(utf8), enc.encode("ünï/😀"));
    assertEquals(bad.name, "caf\ufffd");
    assertEquals(zipEntryNameBytes(bad), latin1);
    // A leading BOM is part of the name, not a marker to strip.
    assertEquals(withBom.name, "\ufeffx");
    assertEquals(zipEntryNameBytes(withBom), bom);
  });
  assertEquals(zipEntryNameBytes({ ...dummyEntry, name: "é" }), enc.encode("é"));
});

const dummyEntry: ZipEntry = {
  name: "",
  method: 0,
  compressedSize: 0,
  uncompressedSize: 0,
  crc32: 0,
  localHeaderOffset: 0,
  flags: 0,
};
