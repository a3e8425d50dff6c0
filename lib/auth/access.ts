/**
 * The access decision for one request when `auth` is configured. Health,
 * readiness and service discovery stay open; the operator pages follow
 * `protectOps`; archives and SHA256SUMS(.sig) accept a signed link instead of
 * a token (Terraform sends none there); everything else needs a bearer token,
 * and a token only sees the upstreams and namespaces its rules name:
 * anything else is answered exactly as if it did not exist.
 * @module
 */
import type { AuthConfig, AuthToken } from "../config/hardening.ts";
import type { Route } from "../protocol/paths.ts";
import { type SignatureProblem, UrlSigner } from "./signed_url.ts";
import { mayAccess, TokenSet } from "./tokens.ts";

/** What to do with a request. */
export type Decision =
  /** Let it through; `token` is who asked (absent on open routes). */
  | { kind: "allow"; token?: AuthToken; via?: "bearer" | "link" }
  /** No usable credentials: 401 with `WWW-Authenticate: Bearer`. */
  | { kind: "unauthenticated"; invalidToken: boolean }
  /** A signed link that does not hold (and no token that would do): 403. */
  | { kind: "badLink"; problem: SignatureProblem | "revoked" }
  /** The token may not see this: 404, as for something that does not exist. */
  | { kind: "hidden"; hostname: string; hiddenUpstream: boolean };

/** Tokens, rules and the URL signer of one app. */
export class AccessControl {
  readonly tokens: TokenSet;
  readonly signer: UrlSigner;

  constructor(readonly config: AuthConfig, key: Uint8Array) {
    this.tokens = new TokenSet(config.tokens);
    this.signer = new UrlSigner(key, config.urlTtlMs);
  }

  /**
   * Decides for a request to `url` (its parsed route, or undefined when nothing is
   * served there: that still needs a token, so unauthenticated clients learn
   * nothing about which paths exist).
   */
  decide(req: Request, url: URL, route: Route | undefined, nowMs: number): Decision {
    const kind = route?.kind;
    if (kind === "health" || kind === "ready" || kind === "wellKnown") return { kind: "allow" };
    if ((kind === "metrics" || kind === "status") && !this.config.protectOps) {
      return { kind: "allow" };
    }
    const scope = route ? scopeOf(route) : undefined;
    let linkProblem: SignatureProblem | "revoked" | undefined;
    if (kind === "archive" || kind === "registrySums" || kind === "moduleArchive") {
      const check = this.signer.verify(url.pathname, url.searchParams, nowMs);
      if (check.kind === "valid") {
        const token = this.tokens.byName(check.tokenName);
        if (token && (!scope || mayAccess(token, scope.hostname, scope.namespace))) {
          return { kind: "allow", token, via: "link" };
        }
        linkProblem = "revoked";
      } else if (check.kind === "refused") {
        linkProblem = check.problem;
      }
    }
    const presented = this.tokens.identify(req.headers.get("authorization"));
    if (presented.kind !== "valid") {
      if (linkProblem) return { kind: "badLink", problem: linkProblem };
      return { kind: "unauthenticated", invalidToken: presented.kind === "invalid" };
    }
    const token = presented.token;
    if (scope && !mayAccess(token, scope.hostname, scope.namespace)) {
      const hiddenUpstream = token.upstreams !== undefined &&
        !token.upstreams.includes(scope.hostname.toLowerCase());
      return { kind: "hidden", hostname: scope.hostname, hiddenUpstream };
    }
    return { kind: "allow", token, via: "bearer" };
  }

  /**
   * The query that makes `path` (relative to `base`, the request's path, or
   * rooted) downloadable without credentials for `token` until now + urlTtl.
   */
  signedQuery(base: string, path: string, token: AuthToken, nowMs: number): string {
    return this.signer.sign(resolvePath(base, path), token.name, nowMs);
  }
}

/** The upstream and namespace a route is about, if any. */
function scopeOf(r: Route): { hostname: string; namespace: string } | undefined {
  if ("provider" in r) return { hostname: r.provider.hostname, namespace: r.provider.namespace };
  if ("module" in r) return { hostname: r.module.hostname, namespace: r.module.namespace };
  // No namespace yet ("-"): a token limited to namespaces never sees one named by the answer.
  if (r.kind === "registryLegacyLookup") return { hostname: r.hostname, namespace: "-" };
  return undefined;
}

/** `ref` resolved against the path `base` the way a URL reference is (no dot segments needed). */
function resolvePath(base: string, ref: string): string {
  if (ref.startsWith("/")) return ref;
  return base.slice(0, base.lastIndexOf("/") + 1) + ref;
}
