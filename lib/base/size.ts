/**
 * Byte sizes as people write them in config files and flags ("50GB",
 * "500MB", "1.5GiB", or a plain number of bytes), and back for output.
 *
 * KB/MB/GB/TB are powers of 1000 and KiB/MiB/GiB/TiB powers of 1024, the way
 * disk vendors and `df -H` / `df -h` use them, so "50GB" means what the label
 * on the disk means.
 * @module
 */

const UNITS: Record<string, number> = {
  b: 1,
  k: 1e3,
  kb: 1e3,
  m: 1e6,
  mb: 1e6,
  g: 1e9,
  gb: 1e9,
  t: 1e12,
  tb: 1e12,
  kib: 2 ** 10,
  mib: 2 ** 20,
  gib: 2 ** 30,
  tib: 2 ** 40,
};

/**
 * Parses a size: a non-negative integer number of bytes, or a string such as
 * "50GB", "500 MB", "1.5GiB", "1048576".
 *
 * @returns the size in bytes (rounded down), or undefined when `v` is not a size
 */
export function parseSize(v: unknown): number | undefined {
  if (typeof v === "number") {
    return Number.isSafeInteger(v) && v >= 0 ? v : undefined;
  }
  if (typeof v !== "string") return undefined;
  const m = /^(\d+(?:\.\d+)?)\s*([a-zA-Z]*)$/.exec(v.trim());
  if (!m) return undefined;
  const unit = UNITS[(m[2] || "b").toLowerCase()];
  if (unit === undefined) return undefined;
  const bytes = Math.floor(Number(m[1]) * unit);
  return Number.isSafeInteger(bytes) ? bytes : undefined;
}

/** Formats bytes for humans with decimal units ("12.3 MB"), matching {@link parseSize}. */
export function formatSize(bytes: number): string {
  if (bytes < 1000) return `${bytes} B`;
  const units = ["kB", "MB", "GB", "TB", "PB"];
  let v = bytes;
  let i = -1;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0)} ${units[i]}`;
}
