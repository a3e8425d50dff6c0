/**
 * The config sections that bound what hostile peers can cost: `limits`,
 * egress (`allowPrivateNetworks`, `egressAllow`), client `auth` and
 * `backgroundVerify`. Each has a default that holds without any config, so a
 * bare install is already bounded.
 * @module
 */
import { MAX_TIMER_MS, parseDurationMs } from "../base/duration.ts";
import { parseCidr } from "../base/ip.ts";
import { parseSize } from "../base/size.ts";
import { createHash } from "../deps/crypto.ts";

/** Resource bounds; every one has a default (see README "Limits"). */
export interface Limits {
  /** Bytes of metadata documents held in memory (an LRU by bytes). */
  metadataMemoryBytes: number;
  /** Largest single metadata document accepted from an upstream (versions, download, SHA256SUMS). */
  metadataDocumentBytes: number;
  /** Largest module download answer (headers and body) accepted from an upstream. */
  moduleAnswerBytes: number;
  /** Platforms fetched at once when building one mirror `{version}.json`. */
  platformConcurrency: number;
  /** Largest archive accepted: a bigger Content-Length or body is refused. */
  archiveBytes: number;
  /** Minimum average rate of an upstream body over any `transferRateWindowMs`, in bytes/s. */
  minTransferRate: number;
  /** Window over which `minTransferRate` is measured. */
  transferRateWindowMs: number;
  /** Time a new connection has to send its first request's headers. */
  headerTimeoutMs: number;
  /** Time an idle keep-alive connection is kept open. */
  idleTimeoutMs: number;
  /** Open client connections; past it the listener stops accepting until one closes. */
  maxConnections: number;
  /** How long "this provider/version/platform does not exist" is remembered. */
  negativeTtlMs: number;
  /** Entries of the negative cache (oldest forgotten first). */
  negativeEntries: number;
}

/** Default bounds. */
export const DEFAULT_LIMITS: Readonly<Limits> = Object.freeze({
  metadataMemoryBytes: 64 * 2 ** 20,
  metadataDocumentBytes: 8 * 2 ** 20,
  moduleAnswerBytes: 64 * 2 ** 10,
  platformConcurrency: 4,
  archiveBytes: 2 * 2 ** 30,
  minTransferRate: 4 * 2 ** 10,
  transferRateWindowMs: 30_000,
  headerTimeoutMs: 10_000,
  idleTimeoutMs: 60_000,
  maxConnections: 1000,
  negativeTtlMs: 60_000,
  negativeEntries: 10_000,
});

/** One client token and what it may see. */
export interface AuthToken {
  /** A label for logs and metrics; never the token itself. */
  name: string;
  /** sha256 of the token, hex. The token itself is never kept. */
  sha256: string;
  /** Upstream hostnames this token may see; undefined means all. */
  upstreams?: string[];
  /** Namespaces this token may see (`"hashicorp"` or `"registry.terraform.io/hashicorp"`); undefined means all. */
  namespaces?: string[];
}

/** Client authentication; absent means every client is let in. */
export interface AuthConfig {
  tokens: AuthToken[];
  /** Put `/-/metrics` and `/-/status` behind the same tokens (health/ready stay open). */
  protectOps: boolean;
  /** Lifetime of the signed archive URLs embedded in JSON answers. */
  urlTtlMs: number;
  /** Secret for signing archive URLs; when absent one is generated and kept in the cache dir. */
  urlKey?: string;
}

/** Background re-verification of the cached archives. */
export interface BackgroundVerifyConfig {
  /** Bytes per second read by the background check; 0 turns it off. */
  bytesPerSecond: number;
  /** Pause between two full passes. */
  intervalMs: number;
}

/** Egress policy inputs (see `upstream/egress.ts`). */
export interface EgressConfig {
  /** Allow loopback, private, link-local and other internal addresses for every host. */
  allowPrivateNetworks: boolean;
  /** Extra allowed targets even when internal: `host`, `host:port`, or a CIDR (`10.1.0.0/16`). */
  egressAllow: string[];
}

type ErrorCtor = new (message: string) => Error;
type Secret = (value: string, key: string) => Promise<string>;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function checkKeys(
  obj: Record<string, unknown>,
  where: string,
  known: readonly string[],
  Err: ErrorCtor,
): void {
  for (const k of Object.keys(obj)) {
    if (!known.includes(k)) {
      throw new Err(`unknown key "${where}.${k}" (known: ${known.join(", ")})`);
    }
  }
}

function duration(v: unknown, key: string, Err: ErrorCtor): number {
  const ms = parseDurationMs(v);
  if (ms === undefined) {
    throw new Err(`"${key}" must be a duration such as "10s" or "5m", got ${JSON.stringify(v)}`);
  }
  // These end up in timers, which fire at once past MAX_TIMER_MS.
  if (ms > MAX_TIMER_MS) throw new Err(`"${key}" must be at most 596h (about 24 days)`);
  return ms;
}

function size(v: unknown, key: string, Err: ErrorCtor): number {
  // "4KB/s" reads naturally for a rate; the "/s" is optional.
  const value = typeof v === "string" ? v.replace(/\/s$/i, "") : v;
  const n = parseSize(value);
  if (n === undefined) {
    throw new Err(
      `"${key}" must be a size such as "8MB" or a number of bytes, got ${JSON.stringify(v)}`,
    );
  }
  return n;
}

function positiveInt(v: unknown, key: string, Err: ErrorCtor): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 1) {
    throw new Err(`"${key}" must be a positive integer, got ${JSON.stringify(v)}`);
  }
  return v;
}

function stringList(v: unknown, key: string, Err: ErrorCtor): string[] {
  if (!Array.isArray(v) || v.some((s) => typeof s !== "string" || s === "")) {
    throw new Err(`"${key}" must be an array of non-empty strings`);
  }
  return v as string[];
}

const LIMIT_KEYS = {
  metadataMemory: ["metadataMemoryBytes", "size"],
  metadataDocument: ["metadataDocumentBytes", "size"],
  moduleAnswer: ["moduleAnswerBytes", "size"],
  platformConcurrency: ["platformConcurrency", "int"],
  archiveSize: ["archiveBytes", "size"],
  minTransferRate: ["minTransferRate", "size"],
  transferRateWindow: ["transferRateWindowMs", "duration"],
  headerTimeout: ["headerTimeoutMs", "duration"],
  idleTimeout: ["idleTimeoutMs", "duration"],
  maxConnections: ["maxConnections", "int"],
  negativeTtl: ["negativeTtlMs", "duration"],
  negativeEntries: ["negativeEntries", "int"],
} as const satisfies Record<string, readonly [keyof Limits, "size" | "int" | "duration"]>;

/** Parses `limits`, filling defaults. */
export function parseLimits(raw: unknown, Err: ErrorCtor): Limits {
  const limits: Limits = { ...DEFAULT_LIMITS };
  if (raw === undefined) return limits;
  if (!isObject(raw)) throw new Err(`"limits" must be an object`);
  checkKeys(raw, "limits", Object.keys(LIMIT_KEYS), Err);
  for (const [name, [field, kind]] of Object.entries(LIMIT_KEYS)) {
    const v = raw[name];
    if (v === undefined) continue;
    const key = `limits.${name}`;
    limits[field] = kind === "size"
      ? size(v, key, Err)
      : kind === "int"
      ? positiveInt(v, key, Err)
      : duration(v, key, Err);
  }
  if (limits.metadataDocumentBytes < 1024) {
    throw new Err(`"limits.metadataDocument" must be at least 1KB`);
  }
  if (limits.headerTimeoutMs < 100 || limits.idleTimeoutMs < 100) {
    throw new Err(`"limits.headerTimeout" and "limits.idleTimeout" must be at least 100ms`);
  }
  if (limits.transferRateWindowMs < 1000) {
    throw new Err(`"limits.transferRateWindow" must be at least 1s`);
  }
  return limits;
}

/** Parses `allowPrivateNetworks` and `egressAllow`. */
export function parseEgress(
  allowPrivate: unknown,
  allow: unknown,
  Err: ErrorCtor,
): EgressConfig {
  if (allowPrivate !== undefined && typeof allowPrivate !== "boolean") {
    throw new Err(`"allowPrivateNetworks" must be true or false`);
  }
  const list = allow === undefined ? [] : stringList(allow, "egressAllow", Err);
  for (const entry of list) {
    // The same parsers the egress policy uses: an entry it could not use is
    // refused here rather than silently ignored there.
    const ok = entry.includes("/")
      ? parseCidr(entry) !== undefined
      : /^(\[[0-9a-fA-F:.]+\]|[a-zA-Z0-9.-]+)(:\d{1,5})?$/.test(entry) &&
        URL.canParse(`http://${entry}`);
    if (!ok) {
      throw new Err(
        `"egressAllow" entries are "host", "host:port" or a CIDR such as "10.0.0.0/8", got "${entry}"`,
      );
    }
  }
  return {
    allowPrivateNetworks: allowPrivate === true,
    egressAllow: list.map((s) => s.toLowerCase()),
  };
}

const AUTH_KEYS = ["tokens", "protectOps", "urlTtl", "urlKey"];
const TOKEN_KEYS = ["name", "token", "sha256", "upstreams", "namespaces"];

/** Parses `auth`; `secret` resolves `env:`/`file:` values. */
export async function parseAuth(
  raw: unknown,
  Err: ErrorCtor,
  secret: Secret,
): Promise<AuthConfig | undefined> {
  if (raw === undefined) return undefined;
  if (!isObject(raw)) throw new Err(`"auth" must be an object`);
  checkKeys(raw, "auth", AUTH_KEYS, Err);
  if (!Array.isArray(raw.tokens) || raw.tokens.length === 0) {
    throw new Err(`"auth.tokens" must be a non-empty array of { "name", "token" | "sha256" }`);
  }
  const tokens: AuthToken[] = [];
  const names = new Set<string>();
  for (const [i, t] of raw.tokens.entries()) {
    const key = `auth.tokens[${i}]`;
    if (!isObject(t)) throw new Err(`"${key}" must be an object`);
    checkKeys(t, key, TOKEN_KEYS, Err);
    if (typeof t.name !== "string" || !/^[\w.@-]{1,64}$/.test(t.name)) {
      throw new Err(`"${key}.name" must be 1-64 letters, digits, ".", "@", "_" or "-"`);
    }
    if (names.has(t.name)) throw new Err(`"${key}.name": "${t.name}" is used twice`);
    names.add(t.name);
    if ((t.token === undefined) === (t.sha256 === undefined)) {
      throw new Err(`"${key}" needs exactly one of "token" (env:/file:/literal) or "sha256"`);
    }
    let sha256: string;
    if (t.token !== undefined) {
      if (typeof t.token !== "string") throw new Err(`"${key}.token" must be a string`);
      const token = await secret(t.token, `${key}.token`);
      if (!/^[\x21-\x7e]{16,}$/.test(token)) {
        throw new Err(`"${key}.token" must be at least 16 printable ASCII characters`);
      }
      sha256 = createHash("sha256").update(token).digest("hex");
    } else {
      if (typeof t.sha256 !== "string" || !/^[0-9a-fA-F]{64}$/.test(t.sha256)) {
        throw new Err(`"${key}.sha256" must be 64 hex digits (sha256 of the token)`);
      }
      sha256 = t.sha256.toLowerCase();
    }
    const token: AuthToken = { name: t.name, sha256 };
    if (t.upstreams !== undefined) {
      token.upstreams = stringList(t.upstreams, `${key}.upstreams`, Err).map((s) =>
        s.toLowerCase()
      );
    }
    if (t.namespaces !== undefined) {
      token.namespaces = stringList(t.namespaces, `${key}.namespaces`, Err).map((s) =>
        s.toLowerCase()
      );
    }
    tokens.push(token);
  }
  let protectOps = true;
  if (raw.protectOps !== undefined) {
    if (typeof raw.protectOps !== "boolean") {
      throw new Err(`"auth.protectOps" must be true or false`);
    }
    protectOps = raw.protectOps;
  }
  const urlTtlMs = raw.urlTtl === undefined ? 3_600_000 : duration(raw.urlTtl, "auth.urlTtl", Err);
  if (urlTtlMs < 60_000) throw new Err(`"auth.urlTtl" must be at least 1m`);
  const auth: AuthConfig = { tokens, protectOps, urlTtlMs };
  if (raw.urlKey !== undefined) {
    if (typeof raw.urlKey !== "string") throw new Err(`"auth.urlKey" must be a string`);
    const key = await secret(raw.urlKey, "auth.urlKey");
    if (key.length < 32) throw new Err(`"auth.urlKey" must be at least 32 characters`);
    auth.urlKey = key;
  }
  return auth;
}

/** Parses `backgroundVerify`. */
export function parseBackgroundVerify(raw: unknown, Err: ErrorCtor): BackgroundVerifyConfig {
  const out: BackgroundVerifyConfig = { bytesPerSecond: 4 * 2 ** 20, intervalMs: 86_400_000 };
  if (raw === undefined) return out;
  if (!isObject(raw)) throw new Err(`"backgroundVerify" must be an object`);
  checkKeys(raw, "backgroundVerify", ["rate", "interval"], Err);
  if (raw.rate !== undefined) out.bytesPerSecond = size(raw.rate, "backgroundVerify.rate", Err);
  if (raw.interval !== undefined) {
    out.intervalMs = duration(raw.interval, "backgroundVerify.interval", Err);
  }
  return out;
}
