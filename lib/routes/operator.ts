/**
 * Operator endpoints: health (`/-/healthz`), readiness (`/-/readyz`),
 * Prometheus metrics (`/-/metrics`) and the status page (`/`).
 * @module
 */
import { mayAccess } from "../auth/tokens.ts";
import type { DiskHealth } from "../cache/disk_health.ts";
import type { Config } from "../config/config.ts";
import type { AuthToken } from "../config/hardening.ts";
import { HttpError } from "../http/errors.ts";
import { utf8Length } from "../http/serve_body.ts";
import { clientSnippet } from "../ops/client_snippet.ts";
import { PROMETHEUS_CONTENT_TYPE } from "../ops/metrics.ts";
import type { StatusPageData } from "../ops/status_page.ts";
import { compareVersions } from "../protocol/names.ts";
import type { RequestContext, RouteHandler, Services } from "./context.ts";

/** `GET /-/healthz`: the process answers. */
export const health: RouteHandler<"health"> = (req, _ctx, _r, s) =>
  textResponse(
    req,
    JSON.stringify({ status: "ok", version: s.version }) + "\n",
    200,
    noStore("application/json"),
  );

/** `GET /-/readyz`: the cache can take new downloads (and whether the shared bucket answers). */
export const ready: RouteHandler<"ready"> = async (req, _ctx, _r, s) =>
  healthResponse(
    req,
    s.diskHealth,
    s.modules.gitStatus(),
    s.bucket ? await s.bucket.readiness() : undefined,
  );

/**
 * `GET /-/metrics`: the Prometheus text format. Its series name every
 * upstream and download host, so a token whose rules hide some of them gets
 * a 403 (naming nothing) rather than a view past its rules.
 */
export const metrics: RouteHandler<"metrics"> = (req, ctx, _r, s) => {
  if (restrictedToken(ctx, s)) {
    throw new HttpError(
      403,
      "the metrics cover every upstream; they need a token without upstreams or namespaces rules",
    );
  }
  return textResponse(req, s.telemetry.render(), 200, noStore(PROMETHEUS_CONTENT_TYPE));
};

/** `GET /`: the status page for browsers, showing only what the token may see. */
export const status: RouteHandler<"status"> = (req, ctx, _r, s) =>
  statusPageResponse(req, s, restrictedToken(ctx, s));

/** The token that asked, when client auth is on and its rules hide something. */
function restrictedToken(ctx: RequestContext, s: Services): AuthToken | undefined {
  if (!s.access || ctx.client === undefined) return undefined;
  const token = s.access.tokens.byName(ctx.client);
  return token && (token.upstreams || token.namespaces) ? token : undefined;
}

function noStore(contentType: string): Headers {
  return new Headers({ "content-type": contentType, "cache-control": "no-store" });
}

const PROBE_REUSE_MS = 1_000;
const lastGoodProbe = new WeakMap<DiskHealth, number>();

/** A probe that passed within the last second counts; otherwise probe now. */
async function recentProbe(health: DiskHealth): Promise<boolean> {
  const at = lastGoodProbe.get(health);
  if (at !== undefined && performance.now() - at < PROBE_REUSE_MS) return true;
  const ok = await health.probe();
  if (ok) lastGoodProbe.set(health, performance.now());
  else lastGoodProbe.delete(health);
  return ok;
}

/**
 * 200 when the disk is healthy and a probe file can be written, fsynced and
 * removed in the temp area (where every download starts); else 503 with the
 * reason. A disk that failed a download (full, I/O errors) stays 503 until
 * the recovery probe succeeds; meanwhile archives are passed through
 * uncached, so a load balancer may prefer another instance.
 *
 * With a shared bucket (`storage.kind: s3`) the answer says whether it
 * answers (`storage`). A bucket that does not answer leaves the status 200
 * with `"status": "degraded"`: the replica still serves its local tier and
 * fetches from upstreams, and a bucket outage hits every replica at once, so
 * a 503 would take the whole fleet out of the load balancer for an outage
 * that it can partly ride out.
 */
async function healthResponse(
  req: Request,
  health: DiskHealth,
  git: string,
  bucket?: { ok: boolean; kind: "s3"; bucket: string; reason?: string },
): Promise<Response> {
  // A failed disk is probed on its own schedule, not by every readyz; a
  // healthy one at most once a second (readyz is open to anyone, and each
  // probe is a write, an fsync and a remove).
  const ok = health.ok && await recentProbe(health);
  // git is named, not required: without it git-sourced modules are passed through.
  const body: Record<string, unknown> = ok
    ? { status: bucket && !bucket.ok ? "degraded" : "ready", git }
    : { status: "unavailable", reason: health.reason ?? "cache directory is not writable", git };
  if (bucket) {
    body.storage = {
      kind: bucket.kind,
      bucket: bucket.bucket,
      reachable: bucket.ok,
      ...(bucket.reason ? { reason: bucket.reason } : {}),
    };
  }
  return textResponse(
    req,
    JSON.stringify(body) + "\n",
    ok ? 200 : 503,
    noStore("application/json"),
  );
}

/**
 * The base URL clients should use: `publicUrl` when configured, else the
 * scheme and `Host` the request came in with (what the browser used is what
 * works from that network).
 */
export function publicBaseUrl(req: Request, config: Config): string {
  if (config.publicUrl) return config.publicUrl;
  const url = new URL(req.url);
  const scheme = config.tls ? "https:" : url.protocol;
  return `${scheme}//${url.host}/`;
}

/**
 * Gathers the status page's data for one request; with `token`, only the
 * upstreams and providers its rules let it see, and totals over those alone
 * (hidden ones must not show, not even as a count).
 */
export function statusPageData(req: Request, s: Services, token?: AuthToken): StatusPageData {
  const base = publicBaseUrl(req, s.config);
  const hosts = [...s.config.upstreams.keys()].filter((h) =>
    !token?.upstreams || token.upstreams.includes(h.toLowerCase())
  );
  let providers = s.inventory.byProvider(compareVersions);
  let archives = s.inventory.count;
  let bytes = s.inventory.totalBytes;
  if (token) {
    providers = providers.filter((g) =>
      mayAccess(token, g.provider.hostname, g.provider.namespace)
    );
    archives = 0;
    bytes = 0;
    for (const g of providers) {
      bytes += g.bytes;
      for (const v of g.versions) archives += v.platforms.length;
    }
  }
  const upstreams = [...s.config.upstreams.values()].filter((u) => hosts.includes(u.hostname)).map((
    u,
  ) => ({
    hostname: u.hostname,
    url: u.url,
    health: s.telemetry.upstreamHealth(u.hostname),
    // Reached through a central Repoxy: its token is `via.token`.
    ...(u.via ? { tokenKey: "via.token" } : {}),
  }));
  const data: StatusPageData = {
    version: s.version,
    now: s.now(),
    startedAt: s.telemetry.startedAt,
    baseUrl: base,
    snippet: clientSnippet(base, hosts, base.startsWith("https:"), s.config.auth !== undefined),
    offline: s.config.offline,
    archives,
    bytes,
    providers,
    upstreams,
  };
  // Activity figures and the cache path are about every provider: a token
  // whose rules hide some must not learn from them that hidden ones are used.
  if (!token?.upstreams && !token?.namespaces) {
    data.cacheDir = s.config.cacheDir;
    data.inflightDownloads = s.inflightDownloads();
    if (s.bucket) data.storage = s.bucket.figures();
    data.ratios = {
      archive: s.telemetry.cacheRatio("archive"),
      metadata: s.telemetry.cacheRatio("metadata"),
    };
  }
  const visible = <T extends { module: string }>(x: T) =>
    !token || mayAccess(token, x.module.split("/")[0]!, x.module.split("/")[1]!);
  data.modules = {
    git: s.modules.gitStatus(),
    stored: s.modules.stored().map((m) => ({
      name:
        `${m.module.hostname}/${m.module.namespace}/${m.module.name}/${m.module.system}@${m.version}`,
      size: m.size,
      ...(m.commit ? { commit: m.commit } : {}),
    })).filter((m) => visible({ module: m.name })),
    moved: [...s.modules.moved.values()].filter(visible),
  };
  return data;
}

let statusPageModule: Promise<typeof import("../ops/status_page.ts")> | undefined;

/**
 * The status page renderer, imported when `/` is first served: a mirror that
 * only ever talks to Terraform never needs it in memory. The specifier is a
 * static string, so `deno compile` still embeds the module.
 */
export function loadStatusPage(): Promise<typeof import("../ops/status_page.ts")> {
  statusPageModule ??= import("../ops/status_page.ts").catch((err) => {
    statusPageModule = undefined;
    throw err;
  });
  return statusPageModule;
}

/** The status page as an HTML response (only what `token` may see, when given). */
export async function statusPageResponse(
  req: Request,
  s: Services,
  token?: AuthToken,
): Promise<Response> {
  const { renderStatusPage } = await loadStatusPage();
  const headers = noStore("text/html; charset=utf-8");
  // No script runs on this page; say so, so an injection could not run one either.
  headers.set(
    "content-security-policy",
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  );
  headers.set("x-content-type-options", "nosniff");
  headers.set("referrer-policy", "no-referrer");
  return textResponse(req, renderStatusPage(statusPageData(req, s, token)), 200, headers);
}

/**
 * A complete text body with its Content-Length set, so the access log and the
 * bytes-served metric can count it without wrapping the body.
 */
function textResponse(req: Request, text: string, status: number, headers: Headers): Response {
  headers.set("content-length", String(utf8Length(text)));
  return new Response(req.method === "HEAD" ? null : text, { status, headers });
}
