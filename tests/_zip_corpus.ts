/**
 * A corpus of zip archives, well-formed and hostile, on which an `h1:` reader
 * must do what Go's `archive/zip` does (tests/zip_go_oracle_test.ts hashes each
 * with Go and with us). Each case is written by hand, byte by byte, so the
 * corner it exercises is exactly the one named: ZIP64 records, data
 * descriptors, prepended data, duplicate names, damaged CRCs and sizes, ...
 * @module
 */
import { crc32, deflateRaw } from "./_zip.ts";

const enc = new TextEncoder();

/** One archive of the corpus. */
export interface ZipCase {
  /** A file name for it, [a-z0-9-]. */
  name: string;
  bytes: Uint8Array;
}

/** Deterministic incompressible bytes. */
export function noise(length: number, seed = 1): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed * 2654435761 >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** Little-endian byte builder. */
class Bytes {
  #parts: number[] = [];
  get length(): number {
    return this.#parts.length;
  }
  u16(n: number): this {
    this.#parts.push(n & 0xff, (n >>> 8) & 0xff);
    return this;
  }
  u32(n: number): this {
    return this.u16(n & 0xffff).u16(n >>> 16);
  }
  u64(n: number): this {
    return this.u32(n % 0x100000000).u32(Math.floor(n / 0x100000000));
  }
  raw(b: Uint8Array): this {
    for (const x of b) this.#parts.push(x);
    return this;
  }
  done(): Uint8Array {
    return new Uint8Array(this.#parts);
  }
}

/** One entry; every override produces a deliberately odd archive. */
interface Entry {
  name: string | Uint8Array;
  data: Uint8Array | string;
  /** 0 stored, 8 deflate, anything else an unknown method (stored bytes). */
  method?: number;
  flags?: number;
  /** Overrides the CRC-32 written in the headers. */
  crc?: number;
  /** Overrides the uncompressed / compressed size in the central directory. */
  size?: number;
  csize?: number;
  /** The compressed bytes as given, instead of compressing `data`. */
  body?: Uint8Array;
  /** Bytes appended to the compressed data (inside the compressed size). */
  trailing?: Uint8Array;
  /** Appends a data descriptor (with or without its signature) and sets flag bit 3. */
  descriptor?: "signed" | "unsigned";
  descriptorCrc?: number;
  /** Central-directory fields moved into a zip64 extra field. */
  zip64?: Array<"size" | "csize" | "offset">;
  /** An extra field only in the local header. */
  localExtra?: Uint8Array;
  /** A different name in the local header than in the central directory. */
  localName?: string;
  /** A broken local header signature. */
  localSig?: number;
  /** Point the central record at another entry's local header (by index). */
  sameDataAs?: number;
}

interface Options {
  zip64End?: boolean;
  comment?: string;
  /** Overrides the entry count of the end record. */
  count?: number;
  /** Bytes before the archive (offsets are written as if they were absent). */
  prefix?: Uint8Array;
  /** Bytes between the central directory and the end record. */
  gap?: Uint8Array;
  /** Bytes after the end record. */
  suffix?: Uint8Array;
}

/** Builds an archive from raw entries (also the hand-made archives of tests/zip_reader_test.ts). */
export async function buildZip(entries: Entry[], opts: Options = {}): Promise<Uint8Array> {
  const out = new Bytes();
  const central = new Bytes();
  const offsets: number[] = [];
  for (const e of entries) {
    const name = typeof e.name === "string" ? enc.encode(e.name) : e.name;
    const data = typeof e.data === "string" ? enc.encode(e.data) : e.data;
    const method = e.method ?? 0;
    const body = new Uint8Array([
      ...(e.body ?? (method === 8 ? await deflateRaw(data) : data)),
      ...(e.trailing ?? []),
    ]);
    const crc = e.crc ?? crc32(data);
    const flags = (e.flags ?? 0x800) | (e.descriptor ? 0x8 : 0);
    const size = e.size ?? data.length;
    const csize = e.csize ?? body.length;
    let offset = out.length;
    if (e.sameDataAs === undefined) {
      offsets.push(offset);
      const localName = e.localName === undefined ? name : enc.encode(e.localName);
      const localExtra = e.localExtra ?? new Uint8Array(0);
      out.u32(e.localSig ?? 0x04034b50).u16(45).u16(flags).u16(method).u16(0).u16(0x21)
        .u32(e.descriptor ? 0 : crc).u32(e.descriptor ? 0 : csize).u32(e.descriptor ? 0 : size)
        .u16(localName.length).u16(localExtra.length).raw(localName).raw(localExtra).raw(body);
      if (e.descriptor === "signed") out.u32(0x08074b50);
      if (e.descriptor) out.u32(e.descriptorCrc ?? crc).u32(csize).u32(size);
    } else {
      offset = offsets[e.sameDataAs]!;
      offsets.push(offset);
    }

    const z = new Set(e.zip64 ?? []);
    const extra = new Bytes();
    if (z.size > 0) {
      const fields = new Bytes();
      if (z.has("size")) fields.u64(size);
      if (z.has("csize")) fields.u64(csize);
      if (z.has("offset")) fields.u64(offset);
      // An unrelated extra field first, so a parser has to walk the list.
      extra.u16(0x5455).u16(5).raw(new Uint8Array([1, 0, 0, 0, 0]));
      extra.u16(0x0001).u16(fields.length).raw(fields.done());
    }
    const extraBytes = extra.done();
    central.u32(0x02014b50).u16(0x031e).u16(45).u16(flags).u16(method).u16(0)
      .u16(0x21).u32(crc)
      .u32(z.has("csize") ? 0xffffffff : csize)
      .u32(z.has("size") ? 0xffffffff : size)
      .u16(name.length).u16(extraBytes.length).u16(0).u16(0).u16(0).u32(0o100644 << 16)
      .u32(z.has("offset") ? 0xffffffff : offset)
      .raw(name).raw(extraBytes);
  }
  const cdOffset = out.length;
  const cd = central.done();
  out.raw(cd);
  if (opts.gap) out.raw(opts.gap);
  const comment = enc.encode(opts.comment ?? "");
  const count = opts.count ?? entries.length;
  if (opts.zip64End) {
    const recordOffset = out.length;
    out.u32(0x06064b50).u64(44).u16(45).u16(45).u32(0).u32(0)
      .u64(count).u64(count).u64(cd.length).u64(cdOffset);
    out.u32(0x07064b50).u32(0).u64(recordOffset).u32(1);
    out.u32(0x06054b50).u16(0).u16(0).u16(0xffff).u16(0xffff).u32(0xffffffff)
      .u32(0xffffffff).u16(comment.length).raw(comment);
  } else {
    out.u32(0x06054b50).u16(0).u16(0).u16(count & 0xffff).u16(count & 0xffff)
      .u32(cd.length).u32(cdOffset).u16(comment.length).raw(comment);
  }
  if (opts.suffix) out.raw(opts.suffix);
  return new Uint8Array([...(opts.prefix ?? []), ...out.done()]);
}

/** The fixture archive Terraform itself hashed (tests/dirhash_test.ts). */
export const FIXTURE_ZIP = new URL(
  "./fixtures/h1/terraform-provider-fixture_1.0.0_linux_amd64.zip",
  import.meta.url,
);

/** The corpus, each archive named for what it exercises. */
export async function zipCorpus(): Promise<ZipCase[]> {
  const text = "provider binary stand-in\n".repeat(40);
  const big = noise(300_000, 7);
  const plain: Entry[] = [
    { name: "terraform-provider-x_v1.0.0", data: text, method: 8 },
    { name: "LICENSE", data: "MPL-2.0\n" },
    { name: "docs/", data: "" },
    { name: "docs/readme.md", data: "# x\n", method: 8 },
  ];
  const cases: Array<[string, Promise<Uint8Array> | Uint8Array]> = [
    ["terraform-fixture", await Deno.readFile(FIXTURE_ZIP)],
    ["stored-deflated-directory", buildZip(plain)],
    ["empty-archive", buildZip([])],
    ["empty-files", buildZip([{ name: "s", data: "" }, { name: "d", data: "", method: 8 }])],
    ["large-entry", buildZip([{ name: "big", data: big, method: 8 }, { name: "b", data: big }])],
    // Data descriptors: signed, unsigned, and one whose CRC disagrees.
    [
      "descriptor-signed-unsigned",
      buildZip([
        { name: "signed", data: text, method: 8, descriptor: "signed" },
        { name: "unsigned", data: text, descriptor: "unsigned" },
      ]),
    ],
    [
      "descriptor-bad-crc",
      buildZip([{ name: "a", data: text, descriptor: "signed", descriptorCrc: 0xdeadbeef }]),
    ],
    // ZIP64: end records and extra fields, each field alone and all three.
    [
      "zip64",
      buildZip([
        { name: "all-three", data: big, method: 8, zip64: ["size", "csize", "offset"] },
        { name: "offset-only", data: text, zip64: ["offset"] },
        { name: "sizes-only", data: text, method: 8, zip64: ["size", "csize"] },
        { name: "plain", data: text },
      ], { zip64End: true }),
    ],
    [
      "zip64-extra-missing",
      buildZip([{ name: "a", data: "x", size: 0xffffffff }]),
    ],
    // Framing: a prepended stub, a gap before the end record, a comment
    // holding a fake end signature, bytes after the end record.
    [
      "prepended-stub",
      buildZip(plain, { prefix: enc.encode("#!/bin/sh\necho self-extracting stub\nexit 0\n") }),
    ],
    ["gap-before-end", buildZip(plain, { gap: new Uint8Array(8) })],
    [
      "comment-and-trailing-bytes",
      buildZip(plain, { comment: "PK\x05\x06 looks like a signature", suffix: new Uint8Array(3) }),
    ],
    ["wrong-entry-count", buildZip(plain, { count: 3 })],
    // Names: duplicates (Go hashes the last one for each), bytes that are
    // not UTF-8, a newline, the local header disagreeing, unsafe paths.
    [
      "duplicate-names",
      buildZip([
        { name: "a", data: "first" },
        { name: "b", data: "between" },
        { name: "a", data: "second", method: 8 },
      ]),
    ],
    [
      "non-utf8-names",
      buildZip([
        { name: Uint8Array.of(0x66, 0xff, 0xfe), data: "latin-1?" },
        { name: Uint8Array.of(0x66, 0xef, 0xbf, 0xbd), data: "U+FFFD" },
      ]),
    ],
    ["newline-in-name", buildZip([{ name: "a\nb", data: "x" }])],
    ["local-name-differs", buildZip([{ name: "central", data: "x", localName: "local-name" }])],
    [
      "local-extra-differs",
      buildZip([{ name: "a", data: "x", localExtra: Uint8Array.of(0xfe, 0xca, 3, 0, 1, 2, 3) }]),
    ],
    [
      "unsafe-paths",
      buildZip([
        { name: "../escape", data: "x" },
        { name: "/abs", data: "y" },
        { name: "back\\slash", data: "z" },
      ]),
    ],
    // Damage to entry data.
    ["crc-mismatch-stored", buildZip([{ name: "a", data: "abc", crc: 1 }])],
    ["crc-mismatch-deflated", buildZip([{ name: "a", data: text, method: 8, crc: 1 }])],
    ["crc-zero-unchecked", buildZip([{ name: "a", data: "abc", crc: 0 }])],
    ["stored-shorter-than-declared", buildZip([{ name: "a", data: "abc", size: 4, csize: 3 }])],
    ["stored-longer-than-declared", buildZip([{ name: "a", data: "abc", size: 2 }])],
    ["deflated-longer-than-declared", buildZip([{ name: "a", data: text, method: 8, size: 10 }])],
    [
      "deflated-bytes-after-stream",
      buildZip([{ name: "a", data: text, method: 8, trailing: enc.encode("junk") }]),
    ],
    [
      "deflate-garbage",
      buildZip([{ name: "a", data: "x", body: noise(64, 3), method: 8, crc: 0 }]),
    ],
    [
      "deflate-truncated",
      buildZip([{
        name: "a",
        data: text,
        body: (await deflateRaw(enc.encode(text))).subarray(0, 20),
        method: 8,
      }]),
    ],
    ["unknown-method", buildZip([{ name: "a", data: "abc", method: 12 }])],
    ["encrypted-flag", buildZip([{ name: "a", data: "abc", flags: 0x801 }])],
    ["bad-local-signature", buildZip([{ name: "a", data: "abc", localSig: 0x04034b51 }])],
    ["directory-with-content", buildZip([{ name: "dir/", data: "not empty" }])],
    ["directory-bad-local-signature", buildZip([{ name: "dir/", data: "", localSig: 0 }])],
    // Two central records sharing one local entry (the overlap of zip bombs).
    [
      "overlapping-entries",
      buildZip([
        { name: "a", data: text, method: 8 },
        { name: "b", data: text, method: 8, sameDataAs: 0 },
      ]),
    ],
    // Not archives.
    ["garbage", noise(4096, 11)],
    ["too-short", enc.encode("PK\x05\x06")],
  ];
  const plainZip = await buildZip(plain);
  cases.push(["truncated", plainZip.subarray(0, plainZip.length - 30)]);
  cases.push([
    "truncated-data",
    new Uint8Array([...plainZip.subarray(0, 40), ...plainZip.subarray(-22)]),
  ]);
  return await Promise.all(cases.map(async ([name, bytes]) => ({ name, bytes: await bytes })));
}
