/**
 * Bearer tokens and their rules. A presented token is hashed and compared
 * with every configured sha256 in constant time (no early exit, no map
 * lookup keyed by the secret), so timing says nothing about which bytes
 * matched; the token itself is never kept.
 * @module
 */
import type { AuthToken } from "../config/hardening.ts";
import { createHash, timingSafeEqual } from "../deps/crypto.ts";

/** The result of reading the Authorization header. */
export type Presented =
  | { kind: "none" }
  | { kind: "invalid" }
  | { kind: "valid"; token: AuthToken };

/** The configured tokens, by their sha256. */
export class TokenSet {
  readonly #digests: Array<{ token: AuthToken; digest: Uint8Array }>;
  readonly #byName = new Map<string, AuthToken>();

  constructor(tokens: readonly AuthToken[]) {
    this.#digests = tokens.map((token) => ({ token, digest: fromHex(token.sha256) }));
    for (const t of tokens) this.#byName.set(t.name, t);
  }

  /** The token named `name` (names are labels, not secrets). */
  byName(name: string): AuthToken | undefined {
    return this.#byName.get(name);
  }

  /**
   * Who presents `Authorization: Bearer <token>`: nobody (no header, or
   * another scheme), an unknown token, or one of the configured tokens.
   */
  identify(authorization: string | null): Presented {
    if (authorization === null) return { kind: "none" };
    const m = /^\s*bearer\s+(\S+)\s*$/i.exec(authorization);
    if (!m) return { kind: "none" };
    const digest = createHash("sha256").update(m[1]!).digest();
    let found: AuthToken | undefined;
    // Every entry is compared, whatever matched before.
    for (const d of this.#digests) {
      if (timingSafeEqual(digest, d.digest) && !found) found = d.token;
    }
    return found ? { kind: "valid", token: found } : { kind: "invalid" };
  }
}

/**
 * Whether `token` may see what lives under `hostname`/`namespace`:
 * `upstreams` lists hostnames, `namespaces` lists `"ns"` (any upstream) or
 * `"host/ns"`; an absent list allows all.
 */
export function mayAccess(token: AuthToken, hostname: string, namespace: string): boolean {
  const host = hostname.toLowerCase();
  const ns = namespace.toLowerCase();
  if (token.upstreams && !token.upstreams.includes(host)) return false;
  if (token.namespaces && !token.namespaces.some((n) => n === ns || n === `${host}/${ns}`)) {
    return false;
  }
  return true;
}

function fromHex(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}
