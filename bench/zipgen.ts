/**
 * Writes large "stored" (uncompressed) provider zips straight to disk for the
 * benchmark, so a 200 MB archive never sits in memory. The content is
 * pseudo-random, so nothing on the path can compress it away.
 * @module
 */
import { crc32 } from "../tests/_zip.ts";

const BLOCK = 1 << 20;

/**
 * Writes a zip holding one executable entry of `size` bytes and returns the
 * number of bytes written. `seed` makes archives of the same size differ (so
 * their sha256s differ).
 */
export async function writeStoredZip(
  path: string,
  entryName: string,
  size: number,
  seed: number,
): Promise<number> {
  const enc = new TextEncoder();
  const name = enc.encode(entryName);
  // One random block, varied per block index: cheap to make and not compressible.
  const block = new Uint8Array(BLOCK);
  for (let i = 0; i < BLOCK; i += 65536) crypto.getRandomValues(block.subarray(i, i + 65536));
  using file = await Deno.open(path, { write: true, create: true, truncate: true });
  const writeAll = async (b: Uint8Array) => {
    let off = 0;
    while (off < b.length) off += await file.write(b.subarray(off));
  };
  const local = new Uint8Array(30 + name.length);
  const lv = new DataView(local.buffer);
  lv.setUint32(0, 0x04034b50, true);
  lv.setUint16(4, 20, true);
  lv.setUint16(6, 0x0800, true);
  lv.setUint16(8, 0, true); // stored
  lv.setUint16(12, 0x21, true); // 1980-01-01
  lv.setUint32(18, size, true);
  lv.setUint32(22, size, true);
  lv.setUint16(26, name.length, true);
  local.set(name, 30);
  await writeAll(local); // the CRC is patched in once known

  let crc = 0;
  let written = 0;
  for (let n = 0; written < size; n++) {
    const len = Math.min(BLOCK, size - written);
    const chunk = block.subarray(0, len);
    new DataView(chunk.buffer, chunk.byteOffset).setUint32(0, (n ^ seed) >>> 0, true);
    crc = crc32(chunk, crc);
    await writeAll(chunk);
    written += len;
  }

  const cd = new Uint8Array(46 + name.length);
  const cv = new DataView(cd.buffer);
  cv.setUint32(0, 0x02014b50, true);
  cv.setUint16(4, 0x0314, true);
  cv.setUint16(6, 20, true);
  cv.setUint16(8, 0x0800, true);
  cv.setUint16(14, 0x21, true);
  cv.setUint32(16, crc, true);
  cv.setUint32(20, size, true);
  cv.setUint32(24, size, true);
  cv.setUint16(28, name.length, true);
  cv.setUint32(38, (0o100755 << 16) >>> 0, true);
  cv.setUint32(42, 0, true);
  cd.set(name, 46);
  const eocd = new Uint8Array(22);
  const ev = new DataView(eocd.buffer);
  ev.setUint32(0, 0x06054b50, true);
  ev.setUint16(8, 1, true);
  ev.setUint16(10, 1, true);
  ev.setUint32(12, cd.length, true);
  ev.setUint32(16, local.length + size, true);
  await writeAll(cd);
  await writeAll(eocd);

  const crcBytes = new Uint8Array(4);
  new DataView(crcBytes.buffer).setUint32(0, crc, true);
  await file.seek(14, Deno.SeekMode.Start);
  await writeAll(crcBytes);
  return local.length + size + cd.length + eocd.length;
}
