/**
 * Capability URLs for archives, SHA256SUMS and its signature: Terraform
 * sends no credentials when it downloads those, so the JSON answers that
 * name them carry `?exp=<unix s>&tok=<token name>&sig=<HMAC>`, an HMAC-SHA256
 * over the exact request path, the expiry and the token name. A link works
 * for that path only, until it expires, and only while its token still
 * exists and may see the provider (revoking a token revokes its links).
 * @module
 */
import { createHmac, timingSafeEqual } from "../deps/crypto.ts";

/** Why a signed link was refused (for the log; clients get one message). */
export type SignatureProblem = "malformed" | "expired" | "bad signature";

/** What a request's query says about its signature. */
export type SignatureCheck =
  | { kind: "absent" }
  | { kind: "refused"; problem: SignatureProblem }
  | { kind: "valid"; tokenName: string };

const ENCODER = new TextEncoder();

/** Signs and verifies capability URLs with one secret key. */
export class UrlSigner {
  readonly #key: Uint8Array;

  /** @param key the secret (at least 32 bytes of entropy) */
  constructor(key: Uint8Array, readonly ttlMs: number) {
    this.#key = key;
  }

  #mac(path: string, exp: string, tokenName: string): Uint8Array {
    // Newlines cannot occur in a path or a name, so the fields cannot be shifted.
    return createHmac("sha256", this.#key).update(`repoxy-url-v1\n${path}\n${exp}\n${tokenName}`)
      .digest();
  }

  /** The query string (with its `?`) that lets anyone GET `path` until now + ttl. */
  sign(path: string, tokenName: string, nowMs: number): string {
    const exp = String(Math.floor((nowMs + this.ttlMs) / 1000));
    const sig = toBase64Url(this.#mac(path, exp, tokenName));
    return `?exp=${exp}&tok=${encodeURIComponent(tokenName)}&sig=${sig}`;
  }

  /** Checks the signature in `query` for `path`; constant time in the MAC comparison. */
  verify(path: string, query: URLSearchParams, nowMs: number): SignatureCheck {
    const exp = query.get("exp");
    const tok = query.get("tok");
    const sig = query.get("sig");
    if (exp === null && tok === null && sig === null) return { kind: "absent" };
    if (exp === null || tok === null || sig === null || !/^\d{1,12}$/.test(exp)) {
      return { kind: "refused", problem: "malformed" };
    }
    const given = fromBase64Url(sig);
    const want = this.#mac(path, exp, tok);
    if (!given || given.length !== want.length || !timingSafeEqual(given, want)) {
      return { kind: "refused", problem: "bad signature" };
    }
    if (Number(exp) * 1000 <= nowMs) return { kind: "refused", problem: "expired" };
    return { kind: "valid", tokenName: tok };
  }
}

function toBase64Url(b: Uint8Array): string {
  let bin = "";
  for (const x of b) bin += String.fromCharCode(x);
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function fromBase64Url(s: string): Uint8Array | undefined {
  if (!/^[A-Za-z0-9_-]{1,128}$/.test(s)) return undefined;
  try {
    const bin = atob(s.replace(/-/g, "+").replace(/_/g, "/"));
    return Uint8Array.from(bin, (c) => c.charCodeAt(0));
  } catch {
    return undefined;
  }
}

/** The secret of a configured `auth.urlKey` (its UTF-8 bytes). */
export function keyFromString(s: string): Uint8Array {
  return ENCODER.encode(s);
}
