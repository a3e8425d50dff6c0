/**
 * `REPOXY_*` environment overrides: each variable sets its key, a variable
 * wins over the file and a flag over the variable, an empty variable counts
 * as unset, and a bad value is an error naming the variable.
 */
import { type ConfigEnv, ConfigError, loadConfig } from "../lib/config/config.ts";
import { ENV_OVERRIDES } from "../lib/config/env_overrides.ts";
import { assertEquals, assertMatch } from "../lib/deps/assert.ts";

const PEM = "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n";

function fakeEnv(vars: Record<string, string>, files: Record<string, string> = {}): ConfigEnv {
  return {
    readTextFile: (p) =>
      p in files ? Promise.resolve(files[p]!) : Promise.reject(new Error("No such file")),
    getEnv: (n) => vars[n],
    cwd: () => "/run",
  };
}

/** A file that sets every overridable key to something else than the variables do. */
const FILE = {
  listen: "127.0.0.1:1111",
  cacheDir: "file-cache",
  publicUrl: "https://file.example/",
  logFormat: "text",
  offline: false,
  maxCacheSize: "1GB",
  metadataTtl: "1m",
  upstreamTimeout: "5s",
  allowPrivateNetworks: false,
  tls: { cert: "file.crt", key: "file.key", http2: true },
};
const files = {
  "/etc/repoxy/config.json": JSON.stringify(FILE),
  "/etc/repoxy/file.crt": PEM,
  "/etc/repoxy/file.key": PEM,
  "/run/env.crt": PEM,
  "/run/env.key": PEM,
};

/** Per variable: a value, and what the loaded config then holds. */
const GOOD: Record<
  string,
  [string, (c: Awaited<ReturnType<typeof loadConfig>>) => unknown, unknown]
> = {
  REPOXY_LISTEN: ["[::1]:2222", (c) => c.listen, { hostname: "::1", port: 2222 }],
  REPOXY_CACHE_DIR: ["env-cache", (c) => c.cacheDir, "/run/env-cache"],
  REPOXY_PUBLIC_URL: [
    "https://env.example/mirror",
    (c) => c.publicUrl,
    "https://env.example/mirror/",
  ],
  REPOXY_LOG_FORMAT: ["json", (c) => c.logFormat, "json"],
  REPOXY_OFFLINE: ["true", (c) => c.offline, true],
  REPOXY_MAX_CACHE_SIZE: ["2GiB", (c) => c.maxCacheSizeBytes, 2 * 2 ** 30],
  REPOXY_METADATA_TTL: ["90", (c) => c.metadataTtlMs, 90_000],
  REPOXY_UPSTREAM_TIMEOUT: ["250ms", (c) => c.upstreamTimeoutMs, 250],
  REPOXY_ALLOW_PRIVATE_NETWORKS: ["1", (c) => c.egress.allowPrivateNetworks, true],
  REPOXY_TLS_CERT: ["env.crt", (c) => c.tls?.cert, "/run/env.crt"],
  REPOXY_TLS_KEY: ["/run/env.key", (c) => c.tls?.key, "/run/env.key"],
};

/** Per variable: a bad value (any non-empty REPOXY_CACHE_DIR is a path, and empty is unset). */
const BAD: Record<string, string> = {
  REPOXY_LISTEN: "localhost",
  REPOXY_PUBLIC_URL: "ftp://x",
  REPOXY_LOG_FORMAT: "xml",
  REPOXY_OFFLINE: "maybe",
  REPOXY_MAX_CACHE_SIZE: "lots",
  REPOXY_METADATA_TTL: "soon",
  REPOXY_UPSTREAM_TIMEOUT: "1ms",
  REPOXY_ALLOW_PRIVATE_NETWORKS: "yes please",
  REPOXY_TLS_CERT: "missing.crt",
  REPOXY_TLS_KEY: "missing.key",
};

async function rejection(p: Promise<unknown>): Promise<ConfigError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw e;
  }
  throw new Error("no ConfigError");
}

Deno.test("every documented REPOXY_* variable is tested here", () => {
  assertEquals(ENV_OVERRIDES.map((o) => o.name).sort(), Object.keys(GOOD).sort());
  assertEquals(
    Object.keys(BAD).sort(),
    Object.keys(GOOD).filter((n) => n !== "REPOXY_CACHE_DIR").sort(),
  );
});

Deno.test("each REPOXY_* variable wins over the file, and over the default without a file", async () => {
  const fromFile = await loadConfig("/etc/repoxy/config.json", {}, fakeEnv({}, files));
  for (const [name, [value, get, want]] of Object.entries(GOOD)) {
    const c = await loadConfig("/etc/repoxy/config.json", {}, fakeEnv({ [name]: value }, files));
    assertEquals(get(c), want, name);
    assertEquals(get(fromFile) === want, false, `${name}: the file alone does not give it`);
    // Variables that need no other key work without any file too.
    if (name === "REPOXY_TLS_CERT" || name === "REPOXY_TLS_KEY") continue;
    const bare = await loadConfig(undefined, {}, fakeEnv({ [name]: value }, files));
    assertEquals(get(bare), want, `${name} without a config file`);
  }
  // Both TLS variables make a TLS config where the file has none.
  const tls = await loadConfig(
    undefined,
    {},
    fakeEnv({ REPOXY_TLS_CERT: "env.crt", REPOXY_TLS_KEY: "env.key" }, files),
  );
  assertEquals([tls.tls?.cert, tls.tls?.key, tls.tls?.certPem], [
    "/run/env.crt",
    "/run/env.key",
    PEM,
  ]);
});

Deno.test("flags win over REPOXY_* variables; empty variables count as unset", async () => {
  const env = fakeEnv({
    REPOXY_LISTEN: "0.0.0.0:2222",
    REPOXY_CACHE_DIR: "/env",
    REPOXY_OFFLINE: "false",
    REPOXY_LOG_FORMAT: "text",
    REPOXY_METADATA_TTL: "",
    REPOXY_PUBLIC_URL: "",
  }, files);
  const c = await loadConfig("/etc/repoxy/config.json", {
    listen: "127.0.0.1:3333",
    cacheDir: "/flag",
    offline: true,
    logFormat: "json",
  }, env);
  assertEquals(c.listen, { hostname: "127.0.0.1", port: 3333 });
  assertEquals(c.cacheDir, "/flag");
  assertEquals(c.offline, true);
  assertEquals(c.logFormat, "json");
  assertEquals(c.metadataTtlMs, 60_000, "empty REPOXY_METADATA_TTL leaves the file's 1m");
  assertEquals(c.publicUrl, "https://file.example/");
});

Deno.test("a bad REPOXY_* value is an error naming the variable, each one", async () => {
  for (const [name, value] of Object.entries(BAD)) {
    const e = await rejection(
      loadConfig("/etc/repoxy/config.json", {}, fakeEnv({ [name]: value }, files)),
    );
    assertEquals(e.problems.length, 1, e.message);
    assertMatch(e.message, new RegExp(`^/etc/repoxy/config.json: "${name}"[ :]`), name);
  }
  // All at once: every variable named, one line each.
  const e = await rejection(loadConfig(undefined, {}, fakeEnv(BAD, files)));
  const named = Object.keys(BAD).filter((n) => e.problems.some((p) => p.includes(`"${n}"`)));
  // The schema names the eight plain keys at once; TLS files are read after it passes.
  assertEquals(named, Object.keys(BAD).filter((n) => !n.startsWith("REPOXY_TLS_")), e.message);
});
