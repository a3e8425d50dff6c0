/**
 * Configuration: defaults, validation of the JSON file, and flag overrides.
 *
 * Every key is optional. Validation is strict (unknown keys are errors) because
 * a typo in a service's config should stop start-up, not be silently ignored.
 * @module
 */
import { dirname, isAbsolute, join, resolve } from "../deps/path.ts";
import { isValidHostname } from "../protocol/names.ts";
import { parseSize } from "../base/size.ts";
import { MAX_TIMER_MS, parseDurationMs } from "../base/duration.ts";
import {
  type AuthConfig,
  type BackgroundVerifyConfig,
  type EgressConfig,
  type Limits,
  parseAuth,
  parseBackgroundVerify,
  parseEgress,
  parseLimits,
} from "./hardening.ts";
import { applyVia, parseVia, type ViaConfig } from "./via.ts";

export type { ViaConfig } from "./via.ts";
export type {
  AuthConfig,
  AuthToken,
  BackgroundVerifyConfig,
  EgressConfig,
  Limits,
} from "./hardening.ts";
export { DEFAULT_LIMITS } from "./hardening.ts";
import { parseStorage, type S3StorageConfig } from "./storage_config.ts";
export type { S3StorageConfig } from "./storage_config.ts";

/** Settings for one upstream registry. */
export interface UpstreamConfig {
  /** The hostname clients use in provider addresses (the key in `upstreams`). */
  hostname: string;
  /** Base URL where the registry is reached; discovery is `{url}/.well-known/terraform.json`. */
  url: string;
  /** Bearer token for the registry API (already resolved from `env:`/`file:`). */
  token?: string;
  /** Armored OpenPGP public keys pinned by the operator for this upstream. */
  trustedKeys: string[];
  /** Set when the registry is reached through a central Repoxy (`via`): its base URL. */
  via?: string;
}

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
  tls?: { cert: string; key: string; certPem: string; keyPem: string; http2: boolean };
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

/** A configuration problem: start-up stops with exit code 2 and this message. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

/** Default listen address: loopback only, so an unconfigured laptop is not an open mirror. */
export const DEFAULT_LISTEN = "127.0.0.1:8080";
/** Upstreams used when the config names none. */
export const DEFAULT_UPSTREAMS = ["registry.terraform.io", "registry.opentofu.org"];

const TOP_KEYS = new Set([
  "$schema",
  "listen",
  "tls",
  "cacheDir",
  "upstreams",
  "defaultUpstream",
  "metadataTtl",
  "upstreamTimeout",
  "offline",
  "publicUrl",
  "logFormat",
  "maxCacheSize",
  "limits",
  "allowPrivateNetworks",
  "egressAllow",
  "auth",
  "backgroundVerify",
  "via",
  "storage",
]);
const UPSTREAM_KEYS = new Set(["url", "token", "trustedKeys"]);

/** Values a user may give on the command line; they override the file. */
export interface ConfigOverrides {
  listen?: string | undefined;
  cacheDir?: string | undefined;
  offline?: boolean | undefined;
  logFormat?: string | undefined;
}

/** Dependencies of config loading, injectable for tests. */
export interface ConfigEnv {
  readTextFile(path: string): Promise<string>;
  getEnv(name: string): string | undefined;
  cwd(): string;
}

const realEnv: ConfigEnv = {
  readTextFile: (p) => Deno.readTextFile(p),
  getEnv: (n) => Deno.env.get(n),
  cwd: () => Deno.cwd(),
};

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

function isObject(v: unknown): v is Record<string, Json> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function typeName(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  return `a ${typeof v}`;
}

function expectString(v: unknown, key: string): string {
  if (typeof v !== "string") throw new ConfigError(`"${key}" must be a string, got ${typeName(v)}`);
  return v;
}

/**
 * Parses `host:port`. IPv6 hosts are written in brackets (`[::1]:8080`).
 */
export function parseListen(value: string, key = "listen"): { hostname: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\[\]]*)):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[3]) : NaN;
  if (!m || !(port >= 0 && port <= 65535)) {
    throw new ConfigError(
      `"${key}" must be HOST:PORT (e.g. "127.0.0.1:8080" or "[::1]:8080"), got "${value}"`,
    );
  }
  const hostname = m[1] ?? (m[2] || "0.0.0.0");
  return { hostname, port };
}

/**
 * Parses a duration: a number of seconds, or a string like "90s", "10m", "1h", "500ms".
 */
export function parseDuration(v: unknown, key: string): number {
  const ms = parseDurationMs(v);
  if (ms !== undefined) return ms;
  throw new ConfigError(
    `"${key}" must be a duration such as "10m", "30s" or a number of seconds, got ${
      JSON.stringify(v)
    }`,
  );
}

async function resolveSecret(value: string, key: string, env: ConfigEnv, base: string) {
  if (value.startsWith("env:")) {
    const name = value.slice(4);
    let got: string | undefined;
    try {
      got = env.getEnv(name);
    } catch (e) {
      // The compiled binary is built with --allow-env limited to REPOXY_* names.
      if (!(e instanceof Deno.errors.NotCapable)) throw e;
      throw new ConfigError(
        `"${key}" names environment variable ${name}, which this build may not read; name it REPOXY_${name} or use "file:"`,
      );
    }
    if (got === undefined || got === "") {
      throw new ConfigError(`"${key}" names environment variable ${name}, which is not set`);
    }
    return got.trim();
  }
  if (value.startsWith("file:")) {
    const path = resolve(base, value.slice(5));
    try {
      return (await env.readTextFile(path)).trim();
    } catch (e) {
      throw new ConfigError(`"${key}": cannot read token file "${path}": ${(e as Error).message}`);
    }
  }
  return value;
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

/**
 * Validates a parsed config document and applies overrides.
 *
 * @param raw the parsed JSON (or `{}` when there is no file)
 * @param overrides values from flags
 * @param base directory relative paths in the file resolve against
 * @throws {ConfigError} naming the offending key
 */
export async function buildConfig(
  raw: unknown,
  overrides: ConfigOverrides = {},
  base?: string,
  env: ConfigEnv = realEnv,
): Promise<Config> {
  const baseDir = base ?? env.cwd();
  if (!isObject(raw)) {
    throw new ConfigError(`the config must be a JSON object, got ${typeName(raw)}`);
  }
  for (const k of Object.keys(raw)) {
    if (!TOP_KEYS.has(k)) {
      throw new ConfigError(
        `unknown key "${k}" (known keys: ${[...TOP_KEYS].slice(1).join(", ")})`,
      );
    }
  }

  const listen = parseListen(
    overrides.listen ??
      (raw.listen === undefined ? DEFAULT_LISTEN : expectString(raw.listen, "listen")),
    overrides.listen !== undefined ? "--listen" : "listen",
  );

  let cacheDir: string;
  if (overrides.cacheDir !== undefined) cacheDir = resolve(env.cwd(), overrides.cacheDir);
  else if (raw.cacheDir !== undefined) {
    const v = expectString(raw.cacheDir, "cacheDir");
    if (v === "") throw new ConfigError(`"cacheDir" must not be empty`);
    cacheDir = resolve(baseDir, v);
  } else cacheDir = defaultCacheDir(env);

  let tls: Config["tls"];
  if (raw.tls !== undefined) {
    if (!isObject(raw.tls)) {
      throw new ConfigError(`"tls" must be an object, got ${typeName(raw.tls)}`);
    }
    for (const k of Object.keys(raw.tls)) {
      if (k !== "cert" && k !== "key" && k !== "http2") {
        throw new ConfigError(`unknown key "tls.${k}" (known: cert, key, http2)`);
      }
    }
    if (raw.tls.http2 !== undefined && typeof raw.tls.http2 !== "boolean") {
      throw new ConfigError(
        `"tls.http2" must be true or false, got ${typeName(raw.tls.http2)}`,
      );
    }
    const cert = raw.tls.cert === undefined
      ? undefined
      : resolve(baseDir, expectString(raw.tls.cert, "tls.cert"));
    const key = raw.tls.key === undefined
      ? undefined
      : resolve(baseDir, expectString(raw.tls.key, "tls.key"));
    if ((cert === undefined) !== (key === undefined)) {
      throw new ConfigError(`"tls.cert" and "tls.key" must be set together`);
    }
    if (cert !== undefined && key !== undefined) {
      const read = async (p: string, k: string) => {
        try {
          const text = await env.readTextFile(p);
          if (!text.includes("-----BEGIN ")) {
            throw new Error("not a PEM file");
          }
          return text;
        } catch (e) {
          throw new ConfigError(`"${k}": cannot read "${p}": ${(e as Error).message}`);
        }
      };
      tls = {
        cert,
        key,
        certPem: await read(cert, "tls.cert"),
        keyPem: await read(key, "tls.key"),
        http2: raw.tls.http2 === true,
      };
    } else if (raw.tls.http2 !== undefined) {
      // Deno serves HTTP/2 only over TLS (ALPN); silently ignoring it would mislead.
      throw new ConfigError(`"tls.http2" needs "tls.cert" and "tls.key"`);
    }
  }

  const upstreams = new Map<string, UpstreamConfig>();
  // Which hosts set their own url / token: `via` leaves the first alone and refuses the second.
  const explicitUrl = new Set<string>();
  const explicitToken = new Set<string>();
  if (raw.upstreams === undefined) {
    for (const h of DEFAULT_UPSTREAMS) {
      upstreams.set(h, { hostname: h, url: `https://${h}`, trustedKeys: [] });
    }
  } else {
    if (!isObject(raw.upstreams)) {
      throw new ConfigError(
        `"upstreams" must be an object keyed by hostname, got ${typeName(raw.upstreams)}`,
      );
    }
    for (const [host, value] of Object.entries(raw.upstreams)) {
      const key = `upstreams.${host}`;
      if (host !== host.toLowerCase() || !isValidHostname(host)) {
        throw new ConfigError(
          `"${key}": "${host}" is not a valid registry hostname (lowercase, punycode for IDNs, optional :port)`,
        );
      }
      if (!isObject(value)) {
        throw new ConfigError(`"${key}" must be an object, got ${typeName(value)}`);
      }
      for (const k of Object.keys(value)) {
        if (!UPSTREAM_KEYS.has(k)) {
          throw new ConfigError(
            `unknown key "${key}.${k}" (known: ${[...UPSTREAM_KEYS].join(", ")})`,
          );
        }
      }
      let url = `https://${host}`;
      if (value.url !== undefined) {
        explicitUrl.add(host);
        url = expectString(value.url, `${key}.url`);
        let parsed: URL;
        try {
          parsed = new URL(url);
        } catch {
          throw new ConfigError(`"${key}.url" is not a valid URL: "${url}"`);
        }
        if (parsed.protocol !== "https:" && parsed.protocol !== "http:") {
          throw new ConfigError(`"${key}.url" must be an http or https URL, got "${url}"`);
        }
        if (parsed.username || parsed.password || parsed.search || parsed.hash) {
          throw new ConfigError(`"${key}.url" must not carry credentials, a query or a fragment`);
        }
        url = parsed.href.replace(/\/+$/, "");
      }
      const up: UpstreamConfig = { hostname: host, url, trustedKeys: [] };
      if (value.token !== undefined) {
        const token = await resolveSecret(
          expectString(value.token, `${key}.token`),
          `${key}.token`,
          env,
          baseDir,
        );
        if (!/^[\x21-\x7e]+$/.test(token)) {
          throw new ConfigError(`"${key}.token" must be printable ASCII without spaces`);
        }
        up.token = token;
        explicitToken.add(host);
      }
      if (value.trustedKeys !== undefined) {
        if (!Array.isArray(value.trustedKeys)) {
          throw new ConfigError(
            `"${key}.trustedKeys" must be an array of armored keys or file: paths`,
          );
        }
        for (const [i, k] of value.trustedKeys.entries()) {
          const s = await resolveSecret(
            expectString(k, `${key}.trustedKeys[${i}]`),
            `${key}.trustedKeys[${i}]`,
            env,
            baseDir,
          );
          if (!s.includes("-----BEGIN PGP PUBLIC KEY BLOCK-----")) {
            throw new ConfigError(
              `"${key}.trustedKeys[${i}]" is not an armored OpenPGP public key`,
            );
          }
          up.trustedKeys.push(s);
        }
      }
      upstreams.set(host, up);
    }
  }

  const via = await parseVia(
    raw.via,
    ConfigError,
    (value, key) => resolveSecret(value, key, env, baseDir),
  );
  if (via) applyVia(via, upstreams.values(), explicitUrl, explicitToken, ConfigError);

  const defaultUpstream = raw.defaultUpstream === undefined
    ? (upstreams.has("registry.terraform.io")
      ? "registry.terraform.io"
      : [...upstreams.keys()][0] ?? "")
    : expectString(raw.defaultUpstream, "defaultUpstream");
  if (upstreams.size > 0 && !upstreams.has(defaultUpstream)) {
    throw new ConfigError(
      `"defaultUpstream" is "${defaultUpstream}", which is not among "upstreams"`,
    );
  }

  const metadataTtlMs = raw.metadataTtl === undefined
    ? DEFAULT_METADATA_TTL_MS
    : parseDuration(raw.metadataTtl, "metadataTtl");
  const upstreamTimeoutMs = raw.upstreamTimeout === undefined
    ? 8_000
    : parseDuration(raw.upstreamTimeout, "upstreamTimeout");
  if (upstreamTimeoutMs < 100) throw new ConfigError(`"upstreamTimeout" must be at least 100ms`);
  if (upstreamTimeoutMs > MAX_TIMER_MS) {
    // A longer AbortSignal.timeout() fires at once.
    throw new ConfigError(`"upstreamTimeout" must be at most 596h (about 24 days)`);
  }

  let offline = false;
  if (raw.offline !== undefined) {
    if (typeof raw.offline !== "boolean") throw new ConfigError(`"offline" must be true or false`);
    offline = raw.offline;
  }
  if (overrides.offline !== undefined) offline = overrides.offline;

  let publicUrl: string | undefined;
  if (raw.publicUrl !== undefined) {
    const v = expectString(raw.publicUrl, "publicUrl");
    try {
      const u = new URL(v);
      if (u.protocol !== "https:" && u.protocol !== "http:") throw new Error();
      publicUrl = u.href.endsWith("/") ? u.href : u.href + "/";
    } catch {
      throw new ConfigError(`"publicUrl" must be an http(s) URL, got "${v}"`);
    }
  }

  if (via && publicUrl === via.url) {
    // Every upstream request would come back to this instance and wait for itself.
    throw new ConfigError(`"via" is this instance's own publicUrl; only an edge names its central`);
  }

  const fmt = overrides.logFormat ??
    (raw.logFormat === undefined ? "text" : expectString(raw.logFormat, "logFormat"));
  if (fmt !== "text" && fmt !== "json") {
    throw new ConfigError(`"logFormat" must be "text" or "json", got "${fmt}"`);
  }

  let maxCacheSizeBytes: number | undefined;
  if (raw.maxCacheSize !== undefined) {
    maxCacheSizeBytes = parseSize(raw.maxCacheSize);
    if (maxCacheSizeBytes === undefined) {
      throw new ConfigError(
        `"maxCacheSize" must be a size such as "50GB", "500MB", "2GiB" or a number of bytes, got ${
          JSON.stringify(raw.maxCacheSize)
        }`,
      );
    }
  }

  const limits = parseLimits(raw.limits, ConfigError);
  const egress = parseEgress(raw.allowPrivateNetworks, raw.egressAllow, ConfigError);
  const auth = await parseAuth(
    raw.auth,
    ConfigError,
    (value, key) => resolveSecret(value, key, env, baseDir),
  );
  const backgroundVerify = parseBackgroundVerify(raw.backgroundVerify, ConfigError);
  const storage = await parseStorage(
    raw.storage,
    ConfigError,
    (v, k) => resolveSecret(v, k, env, baseDir),
  );

  const config: Config = {
    listen,
    cacheDir,
    upstreams,
    defaultUpstream,
    metadataTtlMs,
    upstreamTimeoutMs,
    offline,
    logFormat: fmt,
    limits,
    egress,
    backgroundVerify,
  };
  if (auth) config.auth = auth;
  if (via) config.via = via;
  if (storage) config.storage = storage;
  if (tls) config.tls = tls;
  if (publicUrl) config.publicUrl = publicUrl;
  if (maxCacheSizeBytes !== undefined) config.maxCacheSizeBytes = maxCacheSizeBytes;
  return config;
}

/**
 * Reads and validates the config file (or defaults when `path` is undefined).
 * @throws {ConfigError} with one line naming the file or key
 */
export async function loadConfig(
  path: string | undefined,
  overrides: ConfigOverrides = {},
  env: ConfigEnv = realEnv,
): Promise<Config> {
  if (path === undefined) return await buildConfig({}, overrides, undefined, env);
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
    throw new ConfigError(`config file "${abs}" is not valid JSON: ${(e as Error).message}`);
  }
  try {
    return await buildConfig(raw, overrides, dirname(abs), env);
  } catch (e) {
    if (e instanceof ConfigError) throw new ConfigError(`${abs}: ${e.message}`);
    throw e;
  }
}
