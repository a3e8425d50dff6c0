/**
 * Atomic file writes: temp file in the cache's own `tmp/` (same filesystem, so
 * rename is atomic; /tmp may be another mount), fsync, rename. Readers see the
 * old file or the new one, never half of either.
 * @module
 */
import { dirname, join } from "../deps/path.ts";
import { span } from "../base/trace.ts";

let counter = 0;

/** A unique temp path inside `tmpDir`. */
export function tempPath(tmpDir: string, hint: string): string {
  const safe = hint.replace(/[^A-Za-z0-9._-]/g, "_").slice(-80);
  return join(
    tmpDir,
    `${safe}.tmp-${Deno.pid}-${Date.now().toString(36)}-${(counter++).toString(36)}`,
  );
}

/** Fsyncs a directory so a rename into it survives a power cut. */
export async function syncDir(dir: string): Promise<void> {
  try {
    using d = await Deno.open(dir, { read: true });
    await d.sync();
  } catch {
    // Not every platform can open a directory (Windows); the rename is still atomic.
  }
}

/**
 * Writes `data` to `path` atomically.
 *
 * @param tmpDir a directory on the same filesystem as `path`
 */
export async function atomicWrite(
  path: string,
  data: Uint8Array | string,
  tmpDir: string,
): Promise<void> {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const tmp = tempPath(tmpDir, path);
  try {
    {
      using f = await Deno.open(tmp, { write: true, createNew: true });
      let off = 0;
      while (off < bytes.length) off += await f.write(bytes.subarray(off));
      const synced = span("fsync", { bytes: bytes.length });
      await f.syncData();
      synced();
    }
    await Deno.mkdir(dirname(path), { recursive: true });
    const renamed = span("rename");
    await Deno.rename(tmp, path);
    renamed();
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
  const dirSynced = span("fsync dir");
  await syncDir(dirname(path));
  dirSynced();
}
