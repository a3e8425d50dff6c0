/**
 * The config sections that bound what hostile peers can cost: `limits`,
 * egress (`allowPrivateNetworks`, `egressAllow`), client `auth` and
 * `backgroundVerify`. Each has a default that holds without any config, so a
 * bare install is already bounded. The schema pieces here are spread into
 * the whole config's schema (`schema.ts`); `resolveAuth` does what a schema
 * cannot: read `env:`/`file:` secrets and hash tokens.
 * @module
 */
import { parseCidr } from "../base/ip.ts";
import { createHash } from "../deps/crypto.ts";
import * as v from "../deps/valibot.ts";
import { bool, duration, positiveInt, size, str, strict, stringList } from "./fields.ts";

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

const LIMIT_FIELDS = {
  metadataMemory: "metadataMemoryBytes",
  metadataDocument: "metadataDocumentBytes",
  moduleAnswer: "moduleAnswerBytes",
  platformConcurrency: "platformConcurrency",
  archiveSize: "archiveBytes",
  minTransferRate: "minTransferRate",
  transferRateWindow: "transferRateWindowMs",
  headerTimeout: "headerTimeoutMs",
  idleTimeout: "idleTimeoutMs",
  maxConnections: "maxConnections",
  negativeTtl: "negativeTtlMs",
  negativeEntries: "negativeEntries",
} as const satisfies Record<string, keyof Limits>;

// "4KB/s" reads naturally for a rate; every limit size takes the optional "/s".
const LIMITS_SCHEMA = strict(
  {
    metadataMemory: v.optional(size({ rate: true })),
    metadataDocument: v.optional(size({ rate: true, min: 1024, minText: "1KB" })),
    moduleAnswer: v.optional(size({ rate: true })),
    platformConcurrency: v.optional(positiveInt()),
    archiveSize: v.optional(size({ rate: true })),
    minTransferRate: v.optional(size({ rate: true })),
    transferRateWindow: v.optional(duration(1000, "1s")),
    headerTimeout: v.optional(duration(100, "100ms")),
    idleTimeout: v.optional(duration(100, "100ms")),
    maxConnections: v.optional(positiveInt()),
    negativeTtl: v.optional(duration()),
    negativeEntries: v.optional(positiveInt()),
  } satisfies Record<keyof typeof LIMIT_FIELDS, unknown>,
);

// The same parsers the egress policy uses: an entry it could not use is
// refused here rather than silently ignored there.
function egressEntryOk(entry: string): boolean {
  return entry.includes("/")
    ? parseCidr(entry) !== undefined
    : /^(\[[0-9a-fA-F:.]+\]|[a-zA-Z0-9.-]+)(:\d{1,5})?$/.test(entry) &&
      URL.canParse(`http://${entry}`);
}

const EGRESS_ALLOW = v.pipe(
  stringList(),
  v.rawCheck(({ dataset, addIssue }) => {
    if (!dataset.typed) return;
    for (const entry of dataset.value) {
      if (egressEntryOk(entry)) continue;
      addIssue({
        message: `entries are "host", "host:port" or a CIDR such as "10.0.0.0/8", got "${entry}"`,
      });
    }
  }),
);

const TOKEN_SCHEMA = strict({
  name: v.pipe(
    str(),
    v.regex(/^[\w.@-]{1,64}$/, `must be 1-64 letters, digits, ".", "@", "_" or "-"`),
  ),
  token: v.optional(str(`a string (env:NAME, file:PATH or the token)`)),
  sha256: v.optional(
    v.pipe(str(), v.regex(/^[0-9a-fA-F]{64}$/, "must be 64 hex digits (sha256 of the token)")),
  ),
  upstreams: v.optional(stringList()),
  namespaces: v.optional(stringList()),
});

const TOKENS_MSG = `must be a non-empty array of { "name", "token" | "sha256" }`;

const AUTH_SCHEMA = strict({
  tokens: v.pipe(v.array(TOKEN_SCHEMA, TOKENS_MSG), v.minLength(1, TOKENS_MSG)),
  protectOps: v.optional(bool()),
  urlTtl: v.optional(duration(60_000, "1m")),
  urlKey: v.optional(str()),
});

const BACKGROUND_VERIFY_SCHEMA = strict({
  rate: v.optional(size({ rate: true })),
  interval: v.optional(duration()),
});

/** The config keys this file owns, spread into the whole config's schema. */
export const HARDENING_ENTRIES = {
  limits: v.optional(LIMITS_SCHEMA),
  allowPrivateNetworks: v.optional(bool()),
  egressAllow: v.optional(EGRESS_ALLOW),
  auth: v.optional(AUTH_SCHEMA),
  backgroundVerify: v.optional(BACKGROUND_VERIFY_SCHEMA),
};

type HardeningInput = v.InferOutput<v.ObjectSchema<typeof HARDENING_ENTRIES, undefined>>;

/** `limits` with defaults filled. */
export function toLimits(raw: HardeningInput["limits"]): Limits {
  const limits: Limits = { ...DEFAULT_LIMITS };
  for (const [name, field] of Object.entries(LIMIT_FIELDS)) {
    const value = raw?.[name as keyof typeof LIMIT_FIELDS];
    if (value !== undefined) limits[field] = value;
  }
  return limits;
}

/** `allowPrivateNetworks` and `egressAllow` with defaults filled. */
export function toEgress(raw: HardeningInput): EgressConfig {
  return {
    allowPrivateNetworks: raw.allowPrivateNetworks === true,
    egressAllow: (raw.egressAllow ?? []).map((s) => s.toLowerCase()),
  };
}

/** `backgroundVerify` with defaults filled. */
export function toBackgroundVerify(
  raw: HardeningInput["backgroundVerify"],
): BackgroundVerifyConfig {
  return {
    bytesPerSecond: raw?.rate ?? 4 * 2 ** 20,
    intervalMs: raw?.interval ?? 86_400_000,
  };
}

/** Resolves an `env:`/`file:` secret named by its key; undefined after reporting a problem. */
export type SecretResolver = (value: string, key: string) => Promise<string | undefined>;

/**
 * `auth` with defaults filled, tokens resolved and hashed (the token itself is
 * never kept). Problems go to `problem`, named by key path; undefined when
 * there is no `auth` (every client is let in).
 */
export async function resolveAuth(
  raw: HardeningInput["auth"],
  secret: SecretResolver,
  problem: (message: string) => void,
): Promise<AuthConfig | undefined> {
  if (raw === undefined) return undefined;
  const tokens: AuthToken[] = [];
  const names = new Set<string>();
  for (const [i, t] of raw.tokens.entries()) {
    const key = `auth.tokens[${i}]`;
    if (names.has(t.name)) problem(`"${key}.name": "${t.name}" is used twice`);
    names.add(t.name);
    if ((t.token === undefined) === (t.sha256 === undefined)) {
      problem(`"${key}" needs exactly one of "token" (env:/file:/literal) or "sha256"`);
      continue;
    }
    let sha256: string;
    if (t.token !== undefined) {
      const token = await secret(t.token, `${key}.token`);
      if (token === undefined) continue;
      if (!/^[\x21-\x7e]{16,}$/.test(token)) {
        problem(`"${key}.token" must be at least 16 printable ASCII characters`);
        continue;
      }
      sha256 = createHash("sha256").update(token).digest("hex");
    } else {
      sha256 = t.sha256!.toLowerCase();
    }
    const token: AuthToken = { name: t.name, sha256 };
    if (t.upstreams !== undefined) token.upstreams = t.upstreams.map((s) => s.toLowerCase());
    if (t.namespaces !== undefined) token.namespaces = t.namespaces.map((s) => s.toLowerCase());
    tokens.push(token);
  }
  const auth: AuthConfig = {
    tokens,
    protectOps: raw.protectOps ?? true,
    urlTtlMs: raw.urlTtl ?? 3_600_000,
  };
  if (raw.urlKey !== undefined) {
    const key = await secret(raw.urlKey, "auth.urlKey");
    if (key !== undefined && key.length < 32) {
      problem(`"auth.urlKey" must be at least 32 characters`);
    } else if (key !== undefined) auth.urlKey = key;
  }
  return auth;
}
