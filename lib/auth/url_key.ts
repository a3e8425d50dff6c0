/**
 * The key that signs archive URLs: `auth.urlKey` when configured, else one
 * generated once and kept at `<cacheDir>/auth/url.key` (mode 0600), so links
 * handed out stay valid across a restart and across a fleet sharing the
 * cache dir. Created with a hard link from a synced temp file: of two
 * processes starting at once, one key wins and both use it.
 * @module
 */
import { join } from "../deps/path.ts";
import { randomBytes } from "../deps/crypto.ts";
import { keyFromString } from "./signed_url.ts";

/** Where the generated key lives under the cache dir. */
function urlKeyPath(cacheDir: string): string {
  return join(cacheDir, "auth", "url.key");
}

/** The signing key: the configured one, or the cache dir's (made if missing). */
export async function loadUrlKey(cacheDir: string, configured?: string): Promise<Uint8Array> {
  if (configured !== undefined) return keyFromString(configured);
  const path = urlKeyPath(cacheDir);
  const dir = join(cacheDir, "auth");
  // The key is read from and written into auth/ itself, never through a link elsewhere.
  const checkDir = async () => {
    const st = await Deno.lstat(dir).catch((e) => {
      if (e instanceof Deno.errors.NotFound) return undefined;
      throw e;
    });
    if (st && !st.isDirectory) {
      throw new Error(
        `${dir} is ${st.isSymlink ? "a symbolic link" : "not a directory"}; ` +
          `remove it to have it made (no links are followed inside the cache dir)`,
      );
    }
  };
  await checkDir();
  const existing = await readKey(path);
  if (existing) return existing;
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  await checkDir();
  const tmp = join(dir, `.url.key.${crypto.randomUUID()}`);
  const text = randomBytes(32).toString("hex") + "\n";
  const f = await Deno.open(tmp, { write: true, createNew: true, mode: 0o600 });
  try {
    await f.write(new TextEncoder().encode(text));
    await f.sync();
  } finally {
    f.close();
  }
  try {
    await Deno.link(tmp, path);
  } catch (e) {
    if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
  } finally {
    await Deno.remove(tmp).catch(() => {});
  }
  const key = await readKey(path);
  if (!key) throw new Error(`${path} holds no usable key`);
  return key;
}

/** A key file is a line of hex; anything much bigger was not written by Repoxy. */
const MAX_KEY_FILE_BYTES = 4096;

/**
 * Reads the key file, which must be a regular file (lstat: never through a
 * link, which could lead to /dev/zero, a FIFO or a file whose bytes an
 * attacker knows, and which chmod would follow), or throws saying what to do.
 */
async function readKey(path: string): Promise<Uint8Array | undefined> {
  let st: Deno.FileInfo;
  try {
    st = await Deno.lstat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
  const refuse = (what: string) =>
    new Error(
      `${path} ${what}; Repoxy keeps its URL key only in a regular file it made: ` +
        `delete it to have a new one made`,
    );
  if (!st.isFile) refuseNotFile(st, refuse);
  if (st.size > MAX_KEY_FILE_BYTES) throw refuse(`is larger than ${MAX_KEY_FILE_BYTES} bytes`);
  const f = await Deno.open(path, { read: true });
  let text: string;
  try {
    const held = await f.stat();
    if (!held.isFile || held.ino !== st.ino || held.dev !== st.dev) {
      throw refuse("was replaced while being read");
    }
    const buf = new Uint8Array(MAX_KEY_FILE_BYTES + 1);
    let n = 0;
    for (;;) {
      const got = await f.read(buf.subarray(n));
      if (got === null) break;
      n += got;
      if (n > MAX_KEY_FILE_BYTES) throw refuse(`is larger than ${MAX_KEY_FILE_BYTES} bytes`);
    }
    text = new TextDecoder().decode(buf.subarray(0, n));
  } finally {
    f.close();
  }
  const key = text.trim();
  if (key.length < 32) {
    throw new Error(
      `${path} must hold a key of at least 32 characters; delete it to have a new one made`,
    );
  }
  // A key another process (or an operator) left readable is tightened, not
  // trusted less. The lstat above said this path is no link, so chmod stays here.
  if (st.mode !== null && (st.mode & 0o077) !== 0) await Deno.chmod(path, 0o600);
  return keyFromString(key);
}

function refuseNotFile(st: Deno.FileInfo, refuse: (what: string) => Error): never {
  throw refuse(st.isSymlink ? "is a symbolic link" : "is not a regular file");
}
