/**
 * Shared test helpers: temp dirs, an app wired to a fake registry, and body
 * readers that always consume bodies (resource sanitizers are on).
 * @module
 */
import { type App, type AppDeps, createApp } from "../lib/app.ts";
import { buildConfig, type Config } from "../lib/config/config.ts";
import { createHash } from "../lib/deps/crypto.ts";
import { memoryLogger } from "../lib/base/log.ts";
import { type FakeRegistry, type FakeRegistryOptions, startFakeRegistry } from "./fake_registry.ts";

/** Makes a temp dir; the returned object removes it on dispose. */
export async function tempDir(
  prefix = "repoxy-test-",
): Promise<{ path: string } & AsyncDisposable> {
  const path = await Deno.makeTempDir({ prefix });
  return {
    path,
    async [Symbol.asyncDispose]() {
      await Deno.remove(path, { recursive: true }).catch(() => {});
    },
  };
}

/** A test app plus what tests inspect about it. */
export interface TestApp extends AsyncDisposable {
  app: App;
  config: Config;
  log: ReturnType<typeof memoryLogger>;
  /** Upstream requests seen by the app (from its own client). */
  upstream: Array<{ hostname: string; url: string; status: number | "error" }>;
  get(path: string, init?: RequestInit): Promise<Response>;
}

/**
 * Creates an app whose `registry.terraform.io` upstream is the fake registry.
 * `raw` is merged over the generated config document.
 */
export async function makeTestApp(
  fake: FakeRegistry | undefined,
  cacheDir: string,
  raw: Record<string, unknown> = {},
  deps: AppDeps = {},
): Promise<TestApp> {
  const config = await buildConfig({
    cacheDir,
    upstreams: fake ? { "registry.terraform.io": { url: fake.registryUrl } } : {},
    ...(fake ? { egressAllow: fake.egressAllow } : {}),
    ...raw,
  });
  const log = memoryLogger();
  const upstream: TestApp["upstream"] = [];
  const app = await createApp(config, {
    log,
    onUpstreamRequest: (i) => upstream.push(i),
    sleep: () => Promise.resolve(),
    ...deps,
  });
  return {
    app,
    config,
    log,
    upstream,
    get: (path, init) => app.handle(new Request(`http://mirror.test${path}`, init)),
    async [Symbol.asyncDispose]() {
      await app.close();
    },
  };
}

/** A fake registry, a temp cache dir and an app on both: the usual test setup. */
export interface MirrorFixture extends TestApp {
  fake: FakeRegistry;
  dir: { path: string };
}

/**
 * Starts a fake registry publishing `providers`, makes a temp dir and an app
 * whose `registry.terraform.io` is the fake. Disposing it closes the app,
 * stops the registry and removes the dir, in that order.
 *
 * @param opts.registry more fake registry options (intercepts, overrides)
 * @param opts.config merged over the generated config document
 * @param opts.deps injected app dependencies
 */
export async function mirrorFixture(opts: {
  providers: FakeRegistryOptions["providers"];
  registry?: Omit<FakeRegistryOptions, "providers">;
  config?: Record<string, unknown>;
  deps?: AppDeps;
}): Promise<MirrorFixture> {
  const fake = await startFakeRegistry({ providers: opts.providers, ...opts.registry });
  const dir = await tempDir();
  try {
    const t = await makeTestApp(fake, dir.path, opts.config, opts.deps);
    return {
      ...t,
      fake,
      dir,
      async [Symbol.asyncDispose]() {
        await t[Symbol.asyncDispose]();
        await fake.stop();
        await dir[Symbol.asyncDispose]();
      },
    };
  } catch (e) {
    await fake.stop();
    await dir[Symbol.asyncDispose]();
    throw e;
  }
}

/** Reads a body fully as bytes. */
export async function bytesOf(res: Response): Promise<Uint8Array> {
  return new Uint8Array(await res.arrayBuffer());
}

/** Reads a JSON body, asserting the content type the client requires. */
export async function jsonOf(res: Response): Promise<unknown> {
  const ct = res.headers.get("content-type") ?? "";
  const text = await res.text();
  if (!ct.startsWith("application/json")) {
    throw new Error(`expected application/json, got "${ct}": ${text}`);
  }
  return JSON.parse(text);
}

/** Lowercase hex sha256. */
export function sha256Hex(b: Uint8Array): string {
  return createHash("sha256").update(b).digest("hex");
}

/** Whether a path exists. */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

/** Lists the names in a directory (empty when it does not exist). */
export async function listDir(path: string): Promise<string[]> {
  const out: string[] = [];
  try {
    for await (const e of Deno.readDir(path)) out.push(e.name);
  } catch { /* missing */ }
  return out.sort();
}

/**
 * Files left in a cache's `tmp/`, as paths relative to it. The per-process
 * temp folders and their lock files (cache_dir.ts) are not leftovers; the
 * files inside those folders are.
 */
export async function tempLeftovers(cacheDir: string): Promise<string[]> {
  const tmp = `${cacheDir}/tmp`;
  const out: string[] = [];
  for (const name of await listDir(tmp)) {
    if (/^\d+-[0-9a-f]+\.lock$/.test(name)) continue;
    const st = await Deno.lstat(`${tmp}/${name}`).catch(() => undefined);
    if (st?.isDirectory && /^\d+-[0-9a-f]+$/.test(name)) {
      for (const inner of await listDir(`${tmp}/${name}`)) out.push(`${name}/${inner}`);
    } else if (st) out.push(name);
  }
  return out.sort();
}

/** Standard provider set used by many tests. */
export const TWO_PROVIDERS = [
  {
    namespace: "example",
    type: "alpha",
    versions: [
      { version: "1.0.0", platforms: ["linux_amd64", "darwin_arm64", "windows_amd64"] },
      { version: "1.1.0", platforms: ["linux_amd64", "darwin_arm64", "windows_amd64"] },
    ],
  },
  {
    namespace: "example",
    type: "beta",
    versions: [{ version: "2.3.4", platforms: ["linux_amd64", "darwin_arm64", "linux_arm64"] }],
  },
];
