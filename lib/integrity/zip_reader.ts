/**
 * A streaming zip reader for provider archives.
 *
 * Archives can be hundreds of megabytes, so nothing here holds a whole archive
 * or a whole entry in memory: the central directory is read through a small
 * window and entry data is pulled from disk on demand. Where the zip format
 * leaves room for interpretation, the behaviour follows Go's `archive/zip`,
 * because Terraform's package hashes are computed with it and ours must agree:
 * tests/zip_go_oracle_test.ts has Go hash every archive of the zip corpus
 * (tests/_zip_corpus.ts) and compares.
 *
 * Why not a library (issue 15, evaluated on that corpus against Go's
 * semantics as of the Go Terraform 1.11 is built with): of 38 archives,
 * fflate 0.8.3 (`unzipSync`, which wants the whole archive in memory) agreed
 * with Go on 23 and zip.js 2.24.0 on 31. fflate checks no CRC-32 (it hashes
 * entries whose CRC, data descriptor CRC or sizes are wrong, where Go
 * refuses), ignores local header signatures and a wrong entry count, accepts
 * truncated entry data and a zip64 size without its extra field, and reads
 * garbage names for prepended data or a comment followed by bytes; it decodes
 * names that are not UTF-8 (another h1:). zip.js accepts a bad data descriptor
 * CRC and a wrong entry count, refuses what Go hashes (unsafe paths such as
 * "../x", a zero CRC, bytes after the deflate stream, the encryption flag on
 * plain data), and reads content from a directory entry. Ours agrees on 37;
 * the 38th differs on purpose: overlapping entries, a zip bomb's trick, are
 * refused by dirhash.ts's bounds.
 * @module
 */
import { inflate, InflateError, loadZlib } from "./zip_inflate.ts";

/** `crc32(data, previous)` as node:zlib defines it. */
type Crc32 = (data: Uint8Array, value?: number) => number;

/** One central-directory entry. Sizes and offsets are in bytes. */
export interface ZipEntry {
  /** The entry name decoded as UTF-8 (directories end with "/"). */
  name: string;
  /** Compression method: 0 stored, 8 deflate; others are not readable. */
  method: number;
  compressedSize: number;
  uncompressedSize: number;
  /** CRC-32 of the uncompressed content, as recorded in the central directory. */
  crc32: number;
  /** Offset of the entry's local file header from the start of the file. */
  localHeaderOffset: number;
  /**
   * General-purpose bit flags (bit 3: data descriptor). Bit 0 (encrypted) is
   * ignored, as Go ignores it: the bytes are hashed as they are.
   */
  flags: number;
}

/** The archive is malformed, truncated, or uses a feature this reader does not support. */
export class ZipFormatError extends Error {
  /** @param message what is wrong with the archive */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ZipFormatError";
  }
}

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_EOCD64 = 0x06064b50;
const SIG_EOCD64_LOCATOR = 0x07064b50;
const SIG_DATA_DESCRIPTOR = 0x08074b50;

const LOCAL_HEADER_LEN = 30;
const CENTRAL_HEADER_LEN = 46;
const EOCD_LEN = 22;
const EOCD64_LEN = 56;
const EOCD64_LOCATOR_LEN = 20;
const ZIP64_EXTRA_ID = 0x0001;

/**
 * How far back from the end to look for the end-of-central-directory record.
 * 64 KiB + 22 bytes is enough for the longest comment; Go looks a little
 * further (65 KiB), and we use the same window so the same files open.
 */
const EOCD_SEARCH_LEN = 65 * 1024;
/** Disk reads for entry data. */
const READ_CHUNK = 256 * 1024;
/** Disk reads for the central directory. */
const DIRECTORY_CHUNK = 64 * 1024;
const FLAG_DATA_DESCRIPTOR = 0x8;

const nameDecoder = new TextDecoder("utf-8", { ignoreBOM: true });
const nameEncoder = new TextEncoder();

/**
 * Raw name bytes of entries made by {@link readZipEntries}. Kept aside (not on
 * the entry) so `ZipEntry` stays plain data; dirhash needs the exact bytes
 * because a name that is not valid UTF-8 does not survive decoding.
 */
const rawNames = new WeakMap<ZipEntry, Uint8Array>();

/**
 * The entry name exactly as stored in the archive. For entries not made by
 * {@link readZipEntries} this is the UTF-8 encoding of `entry.name`.
 * @param entry an entry, normally from {@link readZipEntries}
 * @returns the name bytes (do not modify)
 */
export function zipEntryNameBytes(entry: ZipEntry): Uint8Array {
  return rawNames.get(entry) ?? nameEncoder.encode(entry.name);
}

/**
 * What the reader needs of an archive: random access. A `Deno.FsFile` is one;
 * so is any stored object that can seek.
 */
export interface ZipFile {
  read(buf: Uint8Array): Promise<number | null>;
  seek(offset: number, whence: Deno.SeekMode): Promise<number>;
  stat(): Promise<{ size: number }>;
}

/**
 * Seek-then-read is two awaits on one shared cursor, so two streams reading
 * the same handle could interleave and read each other's bytes. Every read
 * goes through this per-handle queue.
 */
const fileQueues = new WeakMap<ZipFile, Promise<void>>();

function withFile<T>(file: ZipFile, task: () => Promise<T>): Promise<T> {
  const previous = fileQueues.get(file) ?? Promise.resolve();
  const run = previous.then(task);
  fileQueues.set(file, run.then(() => {}, () => {}));
  return run;
}

/** Reads exactly `length` bytes at `offset`; a short file is a format error. */
function readAt(
  file: ZipFile,
  offset: number,
  length: number,
  what: string,
): Promise<Uint8Array<ArrayBuffer>> {
  return withFile(file, async () => {
    const buf = new Uint8Array(length);
    await file.seek(offset, Deno.SeekMode.Start);
    let got = 0;
    while (got < length) {
      const n = await file.read(buf.subarray(got));
      if (n === null) {
        throw new ZipFormatError(
          `unexpected end of file reading ${what}: wanted ${length} bytes at offset ${offset}, got ${got}`,
        );
      }
      got += n;
    }
    return buf;
  });
}

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function getUint64(dv: DataView, offset: number, what: string): number {
  const value = dv.getBigUint64(offset, true);
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new ZipFormatError(`${what} is too large (${value})`);
  }
  return Number(value);
}

/** Sequential reads over a byte range through a bounded buffer. */
class WindowReader {
  #file: ZipFile;
  #next: number;
  #end: number;
  #buf = new Uint8Array(0);
  #at = 0;

  constructor(file: ZipFile, start: number, end: number) {
    this.#file = file;
    this.#next = start;
    this.#end = end;
  }

  get remaining(): number {
    return this.#buf.length - this.#at + (this.#end - this.#next);
  }

  /** The next `n` bytes; the caller checks `remaining` first. */
  async take(n: number): Promise<Uint8Array> {
    const buffered = this.#buf.length - this.#at;
    if (buffered < n) {
      const want = Math.min(Math.max(n - buffered, DIRECTORY_CHUNK), this.#end - this.#next);
      const fresh = await readAt(this.#file, this.#next, want, "the central directory");
      this.#next += want;
      const merged = new Uint8Array(buffered + fresh.length);
      merged.set(this.#buf.subarray(this.#at));
      merged.set(fresh, buffered);
      this.#buf = merged;
      this.#at = 0;
    }
    const out = this.#buf.subarray(this.#at, this.#at + n);
    this.#at += n;
    return out;
  }
}

interface DirectoryLocation {
  entryCount: number;
  /** Where the central directory starts in the file. */
  start: number;
  size: number;
  /** Added to recorded offsets to get file offsets (non-zero if data was prepended). */
  base: number;
}

async function findDirectory(file: ZipFile, fileSize: number): Promise<DirectoryLocation> {
  if (fileSize < EOCD_LEN) {
    throw new ZipFormatError(`not a zip archive: the file is only ${fileSize} bytes`);
  }
  const tailLen = Math.min(fileSize, EOCD_SEARCH_LEN);
  const tailStart = fileSize - tailLen;
  const tail = await readAt(file, tailStart, tailLen, "the end of the archive");
  const tv = view(tail);
  let at = -1;
  // The last signature whose comment fits wins; trailing bytes after the
  // comment are tolerated, as Go does.
  for (let i = tail.length - EOCD_LEN; i >= 0; i--) {
    if (
      tv.getUint32(i, true) === SIG_EOCD && i + EOCD_LEN + tv.getUint16(i + 20, true) <= tail.length
    ) {
      at = i;
      break;
    }
  }
  if (at < 0) {
    throw new ZipFormatError("not a zip archive: no end of central directory record found");
  }
  let entryCount = tv.getUint16(at + 10, true);
  let size = tv.getUint32(at + 12, true);
  let offset = tv.getUint32(at + 16, true);
  const eocdOffset = tailStart + at;
  let endOffset = eocdOffset;

  if (entryCount === 0xffff || size === 0xffffffff || offset === 0xffffffff) {
    const locatorOffset = eocdOffset - EOCD64_LOCATOR_LEN;
    if (locatorOffset >= 0) {
      const loc = view(
        await readAt(
          file,
          locatorOffset,
          EOCD64_LOCATOR_LEN,
          "the zip64 end of central directory locator",
        ),
      );
      // A locator for a multi-disk archive is not ours to follow; like Go,
      // treat the archive as plain zip then.
      if (
        loc.getUint32(0, true) === SIG_EOCD64_LOCATOR &&
        loc.getUint32(4, true) === 0 &&
        loc.getUint32(16, true) === 1
      ) {
        const recordOffset = getUint64(loc, 8, "zip64 end of central directory offset");
        if (recordOffset + EOCD64_LEN > locatorOffset) {
          throw new ZipFormatError(
            `zip64 end of central directory record offset ${recordOffset} is outside the archive`,
          );
        }
        const rec = view(
          await readAt(file, recordOffset, EOCD64_LEN, "the zip64 end of central directory record"),
        );
        if (rec.getUint32(0, true) !== SIG_EOCD64) {
          throw new ZipFormatError(
            `no zip64 end of central directory record at offset ${recordOffset}`,
          );
        }
        entryCount = getUint64(rec, 32, "zip64 entry count");
        size = getUint64(rec, 40, "zip64 central directory size");
        offset = getUint64(rec, 48, "zip64 central directory offset");
        endOffset = recordOffset;
      }
    }
  }
  // Data prepended to an archive (a self-extractor stub, say) shifts every
  // offset. Like Go, infer the shift from where the directory ends, unless
  // the recorded offset already points at a directory header.
  let base = endOffset - size - offset;
  if (endOffset - size < 0 || endOffset - size >= fileSize) {
    throw new ZipFormatError(
      `central directory (${size} bytes ending at offset ${endOffset}) lies outside the ${fileSize}-byte file`,
    );
  }
  if (base > 0 && offset + 4 <= fileSize) {
    const sig = view(await readAt(file, offset, 4, "the central directory"));
    if (sig.getUint32(0, true) === SIG_CENTRAL) base = 0;
  }
  const start = base + offset;
  if (start + size > fileSize) {
    throw new ZipFormatError(
      `central directory (offset ${start}, ${size} bytes) lies outside the ${fileSize}-byte file`,
    );
  }
  return { entryCount, start, size, base };
}

/**
 * Reads the central directory of a zip archive.
 *
 * Handles ZIP64 archives and entries. Entry names are decoded as UTF-8
 * whatever the archive's language-encoding flag says, as Go does.
 * @param file an open handle to the archive; it is not closed
 * @param opts.maxEntries stop reading (and throw) past this many entries: a
 *   central directory of 47-byte records in a 2 GiB archive is 45 million
 *   entries, gigabytes of heap before any count could be checked
 * @returns the entries in central-directory order
 * @throws {ZipFormatError} if the file is not a readable zip archive, or has more than `opts.maxEntries` entries
 */
export async function readZipEntries(
  file: ZipFile,
  opts: { maxEntries?: number } = {},
): Promise<ZipEntry[]> {
  const fileSize = (await file.stat()).size;
  const dir = await findDirectory(file, fileSize);
  const reader = new WindowReader(file, dir.start, dir.start + dir.size);
  const entries: ZipEntry[] = [];
  // The 16-bit entry count overflows in archives written without zip64, so
  // (like Go) read records until the signature stops matching and compare
  // counts only modulo 2^16.
  while (reader.remaining >= CENTRAL_HEADER_LEN) {
    const header = view(await reader.take(CENTRAL_HEADER_LEN));
    if (header.getUint32(0, true) !== SIG_CENTRAL) break;
    const nameLen = header.getUint16(28, true);
    const extraLen = header.getUint16(30, true);
    const commentLen = header.getUint16(32, true);
    if (reader.remaining < nameLen + extraLen + commentLen) break;
    const rawName = (await reader.take(nameLen)).slice();
    const extra = await reader.take(extraLen);
    await reader.take(commentLen);

    let uncompressedSize = header.getUint32(24, true);
    let compressedSize = header.getUint32(20, true);
    let localHeaderOffset = header.getUint32(42, true);
    let needUncompressed = uncompressedSize === 0xffffffff;
    let needCompressed = compressedSize === 0xffffffff;
    let needOffset = localHeaderOffset === 0xffffffff;
    const name = nameDecoder.decode(rawName);
    const ev = view(extra);
    for (let i = 0; i + 4 <= extra.length;) {
      const tag = ev.getUint16(i, true);
      const len = ev.getUint16(i + 2, true);
      i += 4;
      if (i + len > extra.length) break;
      if (tag === ZIP64_EXTRA_ID) {
        // The zip64 field holds only the values that overflowed, in this order.
        let at = i;
        const next = (what: string): number => {
          if (at + 8 > i + len) {
            throw new ZipFormatError(`zip64 extra field of entry "${name}" is missing the ${what}`);
          }
          const value = getUint64(ev, at, `${what} of entry "${name}"`);
          at += 8;
          return value;
        };
        if (needUncompressed) {
          uncompressedSize = next("uncompressed size");
          needUncompressed = false;
        }
        if (needCompressed) {
          compressedSize = next("compressed size");
          needCompressed = false;
        }
        if (needOffset) {
          localHeaderOffset = next("local header offset");
          needOffset = false;
        }
      }
      i += len;
    }
    // An uncompressed size of exactly 0xffffffff without zip64 is plausible
    // in old archives (Go accepts it too); the other two are not.
    if (needCompressed || needOffset) {
      throw new ZipFormatError(
        `entry "${name}" has 32-bit overflow markers but no zip64 extra field`,
      );
    }
    localHeaderOffset += dir.base;
    if (localHeaderOffset < 0 || localHeaderOffset + LOCAL_HEADER_LEN > fileSize) {
      throw new ZipFormatError(
        `entry "${name}" has local header offset ${localHeaderOffset}, outside the ${fileSize}-byte file`,
      );
    }
    const entry: ZipEntry = {
      name,
      method: header.getUint16(10, true),
      compressedSize,
      uncompressedSize,
      crc32: header.getUint32(16, true),
      localHeaderOffset,
      flags: header.getUint16(8, true),
    };
    rawNames.set(entry, rawName);
    entries.push(entry);
    if (opts.maxEntries !== undefined && entries.length > opts.maxEntries) {
      throw new ZipFormatError(
        `archive has more than ${opts.maxEntries} entries (bound ${opts.maxEntries}); refusing a zip bomb`,
      );
    }
  }
  if (entries.length % 0x10000 !== dir.entryCount % 0x10000) {
    throw new ZipFormatError(
      `central directory holds ${entries.length} readable entries but the end record says ${dir.entryCount}`,
    );
  }
  return entries;
}

/** Produces an entry's uncompressed bytes one chunk at a time. */
interface EntrySource {
  /** The next non-empty chunk, or null at the end. */
  next(): Promise<Uint8Array | null>;
  /** Releases whatever is in flight; safe to call more than once. */
  dispose(): Promise<void>;
}

const emptySource: EntrySource = {
  next: () => Promise.resolve(null),
  dispose: () => Promise.resolve(),
};

/** Counts and checksums what an entry produced, checking it as it goes. */
class Verifier {
  #entry: ZipEntry;
  #crc32: Crc32;
  #crc = 0;
  #count = 0;

  constructor(entry: ZipEntry, crc32: Crc32) {
    this.#entry = entry;
    this.#crc32 = crc32;
  }

  add(chunk: Uint8Array): void {
    this.#count += chunk.length;
    // Checked per chunk so a lying or bombed entry stops early.
    if (this.#count > this.#entry.uncompressedSize) {
      throw new ZipFormatError(
        `entry "${this.#entry.name}" holds more than its declared ${this.#entry.uncompressedSize} bytes`,
      );
    }
    this.#crc = this.#crc32(chunk, this.#crc);
  }

  async finish(file: ZipFile, dataEnd: number): Promise<void> {
    const entry = this.#entry;
    if (this.#count !== entry.uncompressedSize) {
      throw new ZipFormatError(
        `entry "${entry.name}" holds ${this.#count} bytes but declares ${entry.uncompressedSize}`,
      );
    }
    if (entry.flags & FLAG_DATA_DESCRIPTOR) {
      // The descriptor's sizes may be 32 or 64 bits depending on the writer;
      // only its CRC is checked (against the central directory), as Go does.
      const first = view(await readAt(file, dataEnd, 4, `the data descriptor of "${entry.name}"`));
      const crcAt = first.getUint32(0, true) === SIG_DATA_DESCRIPTOR ? dataEnd + 4 : dataEnd;
      const rest = view(await readAt(file, crcAt, 12, `the data descriptor of "${entry.name}"`));
      if (rest.getUint32(0, true) !== entry.crc32) {
        throw new ZipFormatError(
          `entry "${entry.name}": data descriptor CRC-32 does not match the central directory`,
        );
      }
    } else if (entry.crc32 === 0) {
      // Some writers leave the CRC unset; Go does not check a zero CRC, and
      // an archive Terraform accepts must hash here too.
      return;
    }
    if (this.#crc !== entry.crc32) {
      throw new ZipFormatError(
        `entry "${entry.name}": CRC-32 mismatch (computed ${hex32(this.#crc)}, recorded ${
          hex32(entry.crc32)
        })`,
      );
    }
  }
}

function hex32(n: number): string {
  return n.toString(16).padStart(8, "0");
}

function storedSource(
  file: ZipFile,
  entry: ZipEntry,
  dataStart: number,
  crc32: Crc32,
): EntrySource {
  const end = dataStart + entry.compressedSize;
  const verifier = new Verifier(entry, crc32);
  let pos = dataStart;
  return {
    async next() {
      if (pos >= end) {
        await verifier.finish(file, end);
        return null;
      }
      const n = Math.min(READ_CHUNK, end - pos);
      const chunk = await readAt(file, pos, n, `the data of "${entry.name}"`);
      pos += n;
      verifier.add(chunk);
      return chunk;
    },
    dispose: () => Promise.resolve(),
  };
}

function deflateSource(
  file: ZipFile,
  entry: ZipEntry,
  dataStart: number,
  zlib: Awaited<ReturnType<typeof loadZlib>>,
): EntrySource {
  const end = dataStart + entry.compressedSize;
  const verifier = new Verifier(entry, zlib.crc32);
  let pos = dataStart;
  const inflation = inflate(zlib, async () => {
    if (pos >= end) return null;
    const n = Math.min(READ_CHUNK, end - pos);
    const chunk = await readAt(file, pos, n, `the data of "${entry.name}"`);
    pos += n;
    return chunk;
  });
  return {
    async next() {
      let chunk: Uint8Array | null;
      try {
        chunk = await inflation.next();
      } catch (err) {
        if (!(err instanceof InflateError)) throw err;
        throw new ZipFormatError(`entry "${entry.name}": invalid deflate data: ${err.message}`, {
          cause: err,
        });
      }
      if (chunk === null) {
        // Where the stream ended, not where the compressed size says: bytes
        // after the final block are not read (Go's flate reader stops there).
        await verifier.finish(file, end);
        return null;
      }
      verifier.add(chunk);
      return chunk;
    },
    dispose: () => inflation.dispose(),
  };
}

async function startEntry(file: ZipFile, entry: ZipEntry): Promise<EntrySource> {
  const local = view(
    await readAt(
      file,
      entry.localHeaderOffset,
      LOCAL_HEADER_LEN,
      `the local header of "${entry.name}"`,
    ),
  );
  if (local.getUint32(0, true) !== SIG_LOCAL) {
    throw new ZipFormatError(
      `entry "${entry.name}": no local file header at offset ${entry.localHeaderOffset}`,
    );
  }
  // The local name and extra field may differ in length from the central
  // directory's copies, so the data start comes from the local header.
  const dataStart = entry.localHeaderOffset + LOCAL_HEADER_LEN + local.getUint16(26, true) +
    local.getUint16(28, true);
  // Directories have no content. Go skips decompression for them entirely
  // (some writers give them a method or compressed bytes), so do the same.
  if (entry.name.endsWith("/")) {
    if (entry.uncompressedSize !== 0) {
      throw new ZipFormatError(
        `directory entry "${entry.name}" declares ${entry.uncompressedSize} bytes of content`,
      );
    }
    return emptySource;
  }
  // The encryption flag is not checked: Go's archive/zip reads the bytes as
  // they are, and the CRC-32 and size checks decide (a really encrypted
  // entry fails them).
  if (entry.method === 0) return storedSource(file, entry, dataStart, (await loadZlib()).crc32);
  if (entry.method === 8) return deflateSource(file, entry, dataStart, await loadZlib());
  throw new ZipFormatError(
    `entry "${entry.name}" uses compression method ${entry.method}; only 0 (stored) and 8 (deflate) are supported`,
  );
}

/**
 * Streams the uncompressed content of one entry, reading from disk only as
 * the consumer pulls. The CRC-32 and size are verified at the end; a mismatch
 * errors the stream with a {@link ZipFormatError} (after the bad bytes were
 * delivered, so consumers must not trust content before the stream closes).
 *
 * Several streams may read from the same handle at once. The handle must stay
 * open until the stream is finished or cancelled.
 * @param file the archive, as passed to {@link readZipEntries}
 * @param entry an entry of that archive
 * @returns a byte stream of the entry's content
 */
export function openZipEntry(file: ZipFile, entry: ZipEntry): ReadableStream<Uint8Array> {
  let source: EntrySource | undefined;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        source ??= await startEntry(file, entry);
        const chunk = await source.next();
        if (chunk === null) controller.close();
        else controller.enqueue(chunk);
      } catch (err) {
        await source?.dispose();
        throw err;
      }
    },
    async cancel() {
      await source?.dispose();
    },
  }, { highWaterMark: 0 });
}
