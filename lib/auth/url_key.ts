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
export function urlKeyPath(cacheDir: string): string {
  return join(cacheDir, "auth", "url.key");
}

/** The signing key: the configured one, or the cache dir's (made if missing). */
export async function loadUrlKey(cacheDir: string, configured?: string): Promise<Uint8Array> {
  if (configured !== undefined) return keyFromString(configured);
  const path = urlKeyPath(cacheDir);
  const existing = await readKey(path);
  if (existing) return existing;
  const dir = join(cacheDir, "auth");
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
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

async function readKey(path: string): Promise<Uint8Array | undefined> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
  const key = text.trim();
  if (key.length < 32) {
    throw new Error(
      `${path} must hold a key of at least 32 characters; delete it to have a new one made`,
    );
  }
  // A key another process (or an operator) left readable is tightened, not trusted less.
  const st = await Deno.stat(path);
  if (st.mode !== null && (st.mode & 0o077) !== 0) await Deno.chmod(path, 0o600);
  return keyFromString(key);
}
