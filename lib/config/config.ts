/**
 * Configuration: the file checked against the schema (`schema.ts`), defaults
 * filled, `REPOXY_*` variables and flags applied, secrets and PEM files read.
 *
 * Every key is optional. Validation is strict (unknown keys are errors) because
 * a typo in a service's config should stop start-up, not be silently ignored.
 * Every problem is reported at once, each naming its key.
 * @module
 */
import { dirname, isAbsolute, join, resolve } from "../deps/path.ts";
import * as v from "../deps/valibot.ts";
import { duration } from "./fields.ts";
import {
  type AuthConfig,
  type BackgroundVerifyConfig,
  type EgressConfig,
  type Limits,
  resolveAuth,
  toBackgroundVerify,
  toEgress,
  toLimits,
} from "./hardening.ts";
import { ConfigError, describeIssue, jsonSyntaxMessage, type Origins } from "./issues.ts";
import { applyEnvOverrides } from "./env_overrides.ts";
import {
  type ConfigEnv,
  readTls,
  resolveSecret,
  resolveUpstream,
  type TlsConfig,
  type UpstreamConfig,
} from "./resolve.ts";
import { CONFIG_SCHEMA, listenAddress, listenMessage } from "./schema.ts";
import { resolveStorage, type S3StorageConfig } from "./storage_config.ts";
import { applyVia, resolveVia, type ViaConfig } from "./via.ts";

export type {
  AuthConfig,
  AuthToken,
  BackgroundVerifyConfig,
  EgressConfig,
  Limits,
} from "./hardening.ts";
export { DEFAULT_LIMITS } from "./hardening.ts";
export type { ConfigEnv, UpstreamConfig } from "./resolve.ts";
export type { S3StorageConfig } from "./storage_config.ts";
export type { ViaConfig } from "./via.ts";

/**
 * Default freshness lifetime of a version list: 30 s. A release published
 * upstream is then served by any request made 30 s after publication (plus
 * the upstream's answer, at most the 2 s stale grace), which keeps
 * `terraform init` within a minute of the registry with room for the
 * client's own steps; between revalidations, hits never touch the upstream.
 */
export const DEFAULT_METADATA_TTL_MS = 30_000;

/** The validated, fully resolved configuration. */
export interface Config {
  listen: { hostname: string; port: number };
  /**
   * HTTPS. `http2` (config `tls.http2`, default false) makes the listener
   * offer HTTP/2 by ALPN; by default it offers only HTTP/1.1, which Deno
   * serves faster to the clients that matter (Terraform's Go client, curl).
   */
  tls?: TlsConfig;
  cacheDir: string;
  upstreams: Map<string, UpstreamConfig>;
  /** Upstream used by `/v1/providers/{namespace}/{type}/...` without a hostname. */
  defaultUpstream: string;
  /**
   * How long a version list counts as fresh after it was fetched or last
   * confirmed by the upstream, in milliseconds; then it is revalidated
   * (conditional request) before it is served again. Default
   * {@link DEFAULT_METADATA_TTL_MS}.
   */
  metadataTtlMs: number;
  /** Timeout of one upstream metadata request, in milliseconds. */
  upstreamTimeoutMs: number;
  /** Never contact an upstream; serve only what is cached. */
  offline: boolean;
  /** Public base URL of this instance, used in printed client snippets. */
  publicUrl?: string;
  logFormat: "text" | "json";
  /** Upper bound for the archives in `packages/`, in bytes (LRU eviction after each store). */
  maxCacheSizeBytes?: number;
  /** Resource bounds against hostile peers. */
  limits: Limits;
  /** Which hosts Repoxy may fetch from. */
  egress: EgressConfig;
  /** Client authentication; undefined means open. */
  auth?: AuthConfig;
  /** Background re-verification of cached archives. */
  backgroundVerify: BackgroundVerifyConfig;
  /** The central Repoxy this edge reaches its upstreams through (see `config/via.ts`). */
  via?: ViaConfig;
  /** A shared bucket behind the local cache (storage_config.ts); absent: the disk alone. */
  storage?: S3StorageConfig;
}

export { ConfigError } from "./issues.ts";

/** Default listen address: loopback only, so an unconfigured laptop is not an open mirror. */
export const DEFAULT_LISTEN = "127.0.0.1:8080";
/** Upstreams used when the config names none. */
export const DEFAULT_UPSTREAMS = ["registry.terraform.io", "registry.opentofu.org"];
/** Default timeout of one upstream metadata request: 8 s. */
export const DEFAULT_UPSTREAM_TIMEOUT_MS = 8_000;

function isPlainObject(x: unknown): x is Record<string, unknown> {
  return typeof x === "object" && x !== null && !Array.isArray(x);
}

/** Values a user may give on the command line; they override the file. */
export interface ConfigOverrides {
  listen?: string | undefined;
  cacheDir?: string | undefined;
  offline?: boolean | undefined;
  logFormat?: string | undefined;
}

const realEnv: ConfigEnv = {
  readTextFile: (p) => Deno.readTextFile(p),
  getEnv: (n) => Deno.env.get(n),
  cwd: () => Deno.cwd(),
};

/**
 * Parses `host:port`. IPv6 hosts are written in brackets (`[::1]:8080`).
 */
export function parseListen(value: string, key = "listen"): { hostname: string; port: number } {
  const addr = listenAddress(value);
  if (!addr) throw new ConfigError(`"${key}" ${listenMessage(value)}`);
  return addr;
}

/**
 * Parses a duration: a number of seconds, or a string like "90s", "10m", "1h", "500ms".
 */
export function parseDuration(x: unknown, key: string): number {
  const r = v.safeParse(duration(), x);
  if (r.success) return r.output;
  throw new ConfigError(r.issues.map((i) => `"${key}" ${i.message}`));
}

/** The default cache directory: the user's cache dir, else `./repoxy-data`. */
export function defaultCacheDir(env: ConfigEnv = realEnv): string {
  const xdg = env.getEnv("XDG_CACHE_HOME");
  if (xdg && isAbsolute(xdg)) return join(xdg, "repoxy");
  const home = env.getEnv("HOME");
  if (home && isAbsolute(home)) {
    return Deno.build.os === "darwin"
      ? join(home, "Library", "Caches", "repoxy")
      : join(home, ".cache", "repoxy");
  }
  const local = env.getEnv("LOCALAPPDATA");
  if (local) return join(local, "repoxy");
  return resolve(env.cwd(), "repoxy-data");
}

/** An http(s) URL normalized, ending in `/`. */
function withSlash(url: string): string {
  const href = new URL(url).href;
  return href.endsWith("/") ? href : href + "/";
}

/** Flag names, for errors about the values they gave. */
const FLAG_NAMES: Record<keyof ConfigOverrides, string> = {
  listen: "--listen",
  cacheDir: "--cache-dir",
  offline: "--offline",
  logFormat: "--log-format",
};

/**
 * Validates a parsed config document and applies overrides.
 *
 * @param raw the parsed JSON (or `{}` when there is no file)
 * @param overrides values from flags; they win over `raw`
 * @param base directory relative paths in the file resolve against
 * @param origins key paths whose value in `raw` came from elsewhere (a
 *   `REPOXY_*` variable): errors name that instead, relative paths resolve
 *   against the working directory
 * @throws {ConfigError} listing every problem, each naming its key
 */
export async function buildConfig(
  raw: unknown,
  overrides: ConfigOverrides = {},
  base?: string,
  env: ConfigEnv = realEnv,
  origins: Origins = new Map(),
): Promise<Config> {
  const baseDir = base ?? env.cwd();
  const from = new Map(origins);
  let doc = raw;
  if (isPlainObject(raw)) {
    doc = { ...raw };
    for (const [k, name] of Object.entries(FLAG_NAMES)) {
      const value = overrides[k as keyof ConfigOverrides];
      if (value === undefined) continue;
      (doc as Record<string, unknown>)[k] = value;
      from.set(k, name);
    }
  }
  const parsed = v.safeParse(CONFIG_SCHEMA, doc);
  if (!parsed.success) throw new ConfigError(parsed.issues.map((i) => describeIssue(i, from)));
  const file = parsed.output;

  const problems: string[] = [];
  const problem = (m: string) => problems.push(m);
  // Relative paths from the file resolve against its directory; from a flag or variable, the cwd.
  const pathOf = (key: string, value: string) =>
    resolve(from.has(key) ? env.cwd() : baseDir, value);
  const secret = (value: string, key: string) => resolveSecret(value, key, env, baseDir, problem);

  const tls = await readTls(file.tls, pathOf, (k) => from.get(k) ?? k, env, problem);
  const upstreams = new Map<string, UpstreamConfig>();
  if (file.upstreams === undefined) {
    for (const h of DEFAULT_UPSTREAMS) {
      upstreams.set(h, { hostname: h, url: `https://${h}`, trustedKeys: [] });
    }
  } else {
    for (const [host, value] of Object.entries(file.upstreams)) {
      upstreams.set(host, await resolveUpstream(host, value, secret, problem));
    }
  }
  const defaultUpstream = file.defaultUpstream ??
    (upstreams.has("registry.terraform.io")
      ? "registry.terraform.io"
      : [...upstreams.keys()][0] ?? "");
  if (upstreams.size > 0 && !upstreams.has(defaultUpstream)) {
    problem(`"defaultUpstream" is "${defaultUpstream}", which is not among "upstreams"`);
  }
  const auth = await resolveAuth(file.auth, secret, problem);
  const publicUrl = file.publicUrl === undefined ? undefined : withSlash(file.publicUrl);
  const via = await resolveVia(file.via, secret, problem);
  if (via) {
    // Which hosts set their own url / token: `via` leaves the first alone and refuses the second.
    const own = (k: "url" | "token") =>
      new Set(
        Object.entries(file.upstreams ?? {}).filter(([, u]) => u[k] !== undefined).map(([h]) => h),
      );
    applyVia(via, upstreams.values(), own("url"), own("token"), publicUrl, problem);
  }
  const storage = await resolveStorage(file.storage, secret, problem);
  if (problems.length > 0) throw new ConfigError(problems);

  const config: Config = {
    listen: file.listen ?? parseListen(DEFAULT_LISTEN),
    cacheDir: file.cacheDir === undefined
      ? defaultCacheDir(env)
      : pathOf("cacheDir", file.cacheDir),
    upstreams,
    defaultUpstream,
    metadataTtlMs: file.metadataTtl ?? DEFAULT_METADATA_TTL_MS,
    upstreamTimeoutMs: file.upstreamTimeout ?? DEFAULT_UPSTREAM_TIMEOUT_MS,
    offline: file.offline ?? false,
    logFormat: file.logFormat ?? "text",
    limits: toLimits(file.limits),
    egress: toEgress(file),
    backgroundVerify: toBackgroundVerify(file.backgroundVerify),
  };
  if (auth) config.auth = auth;
  if (via) config.via = via;
  if (storage) config.storage = storage;
  if (tls) config.tls = tls;
  if (publicUrl !== undefined) config.publicUrl = publicUrl;
  if (file.maxCacheSize !== undefined) config.maxCacheSizeBytes = file.maxCacheSize;
  return config;
}

/**
 * Reads and validates the config file (or defaults when `path` is undefined),
 * then applies the `REPOXY_*` variables (see `env_overrides.ts`) and `overrides`
 * from flags: flags win over variables, variables over the file.
 * @throws {ConfigError} listing every problem, each line naming the file and key
 */
export async function loadConfig(
  path: string | undefined,
  overrides: ConfigOverrides = {},
  env: ConfigEnv = realEnv,
): Promise<Config> {
  if (path === undefined) {
    const { doc, origins } = applyEnvOverrides({}, env.getEnv);
    return await buildConfig(doc, overrides, undefined, env, origins);
  }
  const abs = resolve(env.cwd(), path);
  let text: string;
  try {
    text = await env.readTextFile(abs);
  } catch (e) {
    throw new ConfigError(`cannot read config file "${abs}": ${(e as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(
      `config file "${abs}" is not valid JSON: ${jsonSyntaxMessage(text, (e as Error).message)}`,
    );
  }
  const { doc, origins } = applyEnvOverrides(raw, env.getEnv);
  try {
    return await buildConfig(doc, overrides, dirname(abs), env, origins);
  } catch (e) {
    if (e instanceof ConfigError) throw new ConfigError(e.problems.map((p) => `${abs}: ${p}`));
    throw e;
  }
}
