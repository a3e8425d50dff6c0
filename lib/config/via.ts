/**
 * `via`: an edge Repoxy chained to a central one.
 *
 * One key instead of a URL per registry: `"via": "https://central.corp:8443/"`
 * (or `{ "url": ..., "token": "env:REPOXY_CENTRAL_TOKEN" }`) makes every
 * upstream without its own `url` — the configured ones, or the two public
 * registries when `upstreams` is absent — reached at
 * `{via}/{hostname}`, the central's per-host discovery document
 * (`/{host}/.well-known/terraform.json`). The edge then speaks the registry
 * protocol to the central end to end: the documents, the publisher's keys,
 * SHA256SUMS and its signature arrive unchanged, so the edge verifies them
 * against the original registry's keys exactly as it would talking to the
 * registry itself, and stores everything under the original hostname.
 *
 * The token is one the central's `auth` accepts; it goes only to the
 * central's origin (the upstream client's rule for any registry token). The
 * central's origin is a configured upstream origin, so the egress policy
 * lets it through even on a private address, while every other URL the
 * central names (a redirect to a bucket, say) is vetted as usual.
 * @module
 */

/** The parsed `via` key. */
export interface ViaConfig {
  /** The central's base URL, ending in `/`. */
  url: string;
  /** Bearer token the central accepts (resolved from `env:`/`file:`). */
  token?: string;
}

/** The fields of an upstream that `via` fills in. */
export interface ViaUpstream {
  hostname: string;
  url: string;
  token?: string;
  /** The central this upstream is reached through (its `via.url`). */
  via?: string;
}

type ErrorClass = new (message: string) => Error;

function typeName(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  return `a ${typeof v}`;
}

/**
 * Parses `via`: a URL string, or `{ url, token }`.
 *
 * @param resolveSecret resolves `env:` / `file:` token values as for upstream tokens
 * @throws the given error class, naming the key
 */
export async function parseVia(
  raw: unknown,
  Err: ErrorClass,
  resolveSecret: (value: string, key: string) => Promise<string>,
): Promise<ViaConfig | undefined> {
  if (raw === undefined) return undefined;
  let url: unknown;
  let token: unknown;
  if (typeof raw === "string") url = raw;
  else if (typeof raw === "object" && raw !== null && !Array.isArray(raw)) {
    const obj = raw as Record<string, unknown>;
    for (const k of Object.keys(obj)) {
      if (k !== "url" && k !== "token") {
        throw new Err(`unknown key "via.${k}" (known: url, token)`);
      }
    }
    url = obj.url;
    token = obj.token;
    if (url === undefined) throw new Err(`"via.url" is required`);
  } else {
    throw new Err(
      `"via" must be the central Repoxy's URL or { "url": ..., "token": ... }, got ${
        typeName(raw)
      }`,
    );
  }
  const key = typeof raw === "string" ? "via" : "via.url";
  if (typeof url !== "string") throw new Err(`"${key}" must be a string, got ${typeName(url)}`);
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new Err(`"${key}" is not a valid URL: "${url}"`);
  }
  if (parsed.protocol !== "https:" && parsed.protocol !== "http:") {
    throw new Err(`"${key}" must be an http or https URL, got "${url}"`);
  }
  if (parsed.username || parsed.password || parsed.search || parsed.hash) {
    throw new Err(
      `"${key}" must not carry credentials, a query or a fragment (put the token in "via.token")`,
    );
  }
  const out: ViaConfig = { url: parsed.href.endsWith("/") ? parsed.href : parsed.href + "/" };
  if (token !== undefined) {
    if (typeof token !== "string") {
      throw new Err(`"via.token" must be a string, got ${typeName(token)}`);
    }
    const t = await resolveSecret(token, "via.token");
    if (!/^[\x21-\x7e]+$/.test(t)) {
      throw new Err(`"via.token" must be printable ASCII without spaces`);
    }
    out.token = t;
  }
  return out;
}

/**
 * Points every upstream without its own `url` at the central: url
 * `{via}/{hostname}`, token `via.token`. An upstream with its own `url` keeps
 * it (a registry the central does not serve). An upstream token without a
 * `url` is refused: the edge never talks to that registry, so the token
 * would go to the central, which holds the registry's own token itself.
 *
 * @param explicit hostnames whose `url` the config set
 * @param explicitToken hostnames whose `token` the config set
 * @throws the given error class, naming the key
 */
export function applyVia(
  via: ViaConfig,
  upstreams: Iterable<ViaUpstream>,
  explicit: ReadonlySet<string>,
  explicitToken: ReadonlySet<string>,
  Err: ErrorClass,
): void {
  for (const up of upstreams) {
    if (explicit.has(up.hostname)) continue;
    if (explicitToken.has(up.hostname)) {
      throw new Err(
        `"upstreams.${up.hostname}.token": with "via", this registry is reached through ${via.url}, ` +
          `which holds the registry's own token; give the central's token as "via.token" ` +
          `(or set "upstreams.${up.hostname}.url" to reach the registry directly)`,
      );
    }
    // The hostname is a valid registry hostname (lowercase, punycode, optional
    // :port): a single path segment, nothing to escape.
    up.url = via.url + up.hostname;
    up.via = via.url;
    if (via.token !== undefined) up.token = via.token;
    else delete up.token;
  }
}
