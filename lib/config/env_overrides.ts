/**
 * `REPOXY_*` environment variables for the keys container platforms set
 * (listen address, cache volume, public URL, log format...). The rule: a
 * flag wins over a variable, a variable over the config file, and an empty
 * variable counts as unset. A bad value is an error naming the variable.
 * @module
 */

/** How a variable's text becomes a config value. */
type Kind = "string" | "boolean" | "duration" | "size";

/** One variable and the config key it sets. */
export interface EnvOverride {
  name: string;
  /** Key path in the config file (`tls.cert`). */
  key: string;
  kind: Kind;
}

/** Every `REPOXY_*` override, in the order the docs list them. */
export const ENV_OVERRIDES: readonly EnvOverride[] = [
  { name: "REPOXY_LISTEN", key: "listen", kind: "string" },
  { name: "REPOXY_CACHE_DIR", key: "cacheDir", kind: "string" },
  { name: "REPOXY_PUBLIC_URL", key: "publicUrl", kind: "string" },
  { name: "REPOXY_LOG_FORMAT", key: "logFormat", kind: "string" },
  { name: "REPOXY_OFFLINE", key: "offline", kind: "boolean" },
  { name: "REPOXY_MAX_CACHE_SIZE", key: "maxCacheSize", kind: "size" },
  { name: "REPOXY_METADATA_TTL", key: "metadataTtl", kind: "duration" },
  { name: "REPOXY_UPSTREAM_TIMEOUT", key: "upstreamTimeout", kind: "duration" },
  { name: "REPOXY_ALLOW_PRIVATE_NETWORKS", key: "allowPrivateNetworks", kind: "boolean" },
  { name: "REPOXY_TLS_CERT", key: "tls.cert", kind: "string" },
  { name: "REPOXY_TLS_KEY", key: "tls.key", kind: "string" },
];

/** Variable text → the JSON value the file would hold; what does not convert stays text for the schema to refuse. */
function convert(text: string, kind: Kind): unknown {
  const t = text.trim();
  if (kind === "boolean") {
    const lower = t.toLowerCase();
    if (lower === "true" || lower === "1") return true;
    if (lower === "false" || lower === "0") return false;
    return text;
  }
  // A bare number means what it means in the file: seconds, or bytes.
  if ((kind === "duration" || kind === "size") && /^\d+(\.\d+)?$/.test(t)) return Number(t);
  return kind === "string" ? text : t;
}

/**
 * A variable of this process, or undefined when it is not set or this build's
 * `--allow-env` leaves its name out (serve's `REPOXY_TRACE`, say).
 */
export function readEnv(name: string): string | undefined {
  return read((n) => Deno.env.get(n), name);
}

function read(getEnv: (name: string) => string | undefined, name: string): string | undefined {
  try {
    return getEnv(name);
  } catch (e) {
    // A build whose --allow-env leaves a name out: that variable is simply not set.
    if (e instanceof Deno.errors.NotCapable) return undefined;
    throw e;
  }
}

/**
 * Lays the set `REPOXY_*` variables over a parsed config document.
 *
 * @returns the new document (the input is not changed) and, per key path
 *   set, the variable that set it, so errors name the variable
 */
export function applyEnvOverrides(
  raw: unknown,
  getEnv: (name: string) => string | undefined,
): { doc: unknown; origins: Map<string, string> } {
  const origins = new Map<string, string>();
  // Not an object: the schema reports that, naming the file.
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) return { doc: raw, origins };
  const doc: Record<string, unknown> = { ...raw };
  for (const o of ENV_OVERRIDES) {
    const text = read(getEnv, o.name);
    if (text === undefined || text === "") continue;
    const path = o.key.split(".");
    let at: Record<string, unknown> | undefined = doc;
    for (const part of path.slice(0, -1)) {
      const inner: unknown = at[part] ?? {};
      // A section that is not an object stays as it is, for the schema to report.
      if (typeof inner !== "object" || inner === null || Array.isArray(inner)) {
        at = undefined;
        break;
      }
      at = at[part] = { ...inner };
    }
    if (at === undefined) continue;
    at[path.at(-1)!] = convert(text, o.kind);
    origins.set(o.key, o.name);
  }
  return { doc, origins };
}

/**
 * The variables set in this process, as `NAME (key)`: what `config check`
 * and the server's start-up line show, since a variable set by the platform
 * changes a setting nobody reads in the config file.
 */
export function overridesInEffect(getEnv: (name: string) => string | undefined): string[] {
  return ENV_OVERRIDES.filter((o) => (read(getEnv, o.name) ?? "") !== "").map((o) =>
    `${o.name} (${o.key})`
  );
}
