/**
 * The provider registry protocol (a pull-through registry behind a `host`
 * block): service discovery, `versions`, `download` with its three URLs
 * pointed at Repoxy, SHA256SUMS and its signature byte for byte (the module
 * registry's answers are `modules.ts`'s).
 * @module
 */
import { errorResponse, NotFoundError } from "../http/errors.ts";
import { utf8Length } from "../http/serve_body.ts";
import { archiveFilename, providerString } from "../protocol/names.ts";
import { rewriteDownloadDoc } from "../protocol/registry_json.ts";
import { type RouteHandler } from "./context.ts";
import { jsonResponse, keptJson } from "./json_answer.ts";
import { withDeadline } from "./deadline.ts";

/** `GET /.well-known/terraform.json`: the services a `host` block may name. */
export const wellKnown: RouteHandler<"wellKnown"> = (req) =>
  jsonResponse(
    req,
    JSON.stringify({ "modules.v1": "/v1/modules/", "providers.v1": "/v1/providers/" }) + "\n",
    undefined,
    300,
  );

/**
 * `GET /{host}/.well-known/terraform.json`: the discovery document of one
 * upstream registry as served here, so that `{this instance}/{host}` works as
 * the registry's URL for another Repoxy (an edge chained to this central
 * one, config `via`): its `providers.v1` and `modules.v1` are this
 * instance's per-host APIs, which pass the registry's documents, keys,
 * SHA256SUMS and signatures through unchanged. A host not among `upstreams`
 * is not served here: 404, so the edge says the registry is unknown instead
 * of being answered by another registry's documents.
 */
export const hostWellKnown: RouteHandler<"hostWellKnown"> = (req, _ctx, r, s) => {
  if (!s.config.upstreams.has(r.hostname)) {
    throw new NotFoundError(`registry ${r.hostname} is not served here (not among "upstreams")`);
  }
  // Rooted at publicUrl when set (a path prefix behind a proxy), like the download URLs.
  const base = s.config.publicUrl ?? "/";
  return jsonResponse(
    req,
    JSON.stringify({
      "modules.v1": `${base}v1/modules/${r.hostname}/`,
      "providers.v1": `${base}v1/providers/${r.hostname}/`,
    }) + "\n",
    undefined,
    300,
  );
};

/** `GET /v1/providers/{host}/{ns}/{type}/versions`: the upstream's list as it is. */
export const registryVersions: RouteHandler<"registryVersions"> = async (req, ctx, r, s) => {
  const got = await s.source.versionsDocument(r.provider);
  ctx.cache = got.status;
  return keptJson(req, ctx, s.answers, got.value, got);
};

/**
 * `GET /v1/providers/[{host}/]-/{type}/versions`: the legacy-namespace lookup
 * behind Terraform's "Did you intend to use {namespace}/{type}?", passed
 * through as the registry answers it (status and body, never kept): a 200's
 * body byte for byte (`id`, `moved_to`, `versions`: whatever the registry
 * says), a 404 stays a 404, always as `application/json`. A 200 that is
 * not a JSON object is a 502; an error body that is not JSON becomes the
 * protocol's `{"errors": [...]}` with the same status.
 */
export const registryLegacyLookup: RouteHandler<"registryLegacyLookup"> = async (
  req,
  ctx,
  r,
  s,
) => {
  const a = await withDeadline(
    req,
    ctx,
    (signal) => s.source.legacyLookup(r.hostname, r.type, signal),
  );
  ctx.cache = "miss";
  // Always JSON, whatever the upstream labelled it: a hostile registry must
  // not get a page (scripts) served from the mirror's origin.
  const headers = new Headers({
    "cache-control": "no-store",
    "x-repoxy-cache": "miss",
    "content-type": "application/json",
    "x-content-type-options": "nosniff",
  });
  if (!isJsonObject(a.body) && a.status === 200) {
    return errorResponse(
      502,
      `upstream ${r.hostname} answered the legacy lookup of "${r.type}" with something not JSON`,
      { "x-repoxy-cache": "miss" },
    );
  }
  if (a.status !== 200 && (a.status < 400 || !isJsonObject(a.body))) {
    // Only a 200 carries an answer; other success or redirect statuses would
    // leave the client without one, so they are the upstream's error.
    return errorResponse(
      a.status >= 400 ? a.status : 502,
      `upstream ${r.hostname} answered ${a.status} for the legacy lookup of "${r.type}"`,
      { "x-repoxy-cache": "miss" },
    );
  }
  headers.set("content-length", String(utf8Length(a.body)));
  return new Response(req.method === "HEAD" ? null : a.body, { status: a.status, headers });
};

function isJsonObject(text: string): boolean {
  try {
    const v = JSON.parse(text);
    return typeof v === "object" && v !== null && !Array.isArray(v);
  } catch {
    return false;
  }
}

/**
 * `GET /v1/providers/{host}/{ns}/{type}/{version}/download/{os}/{arch}`: the
 * upstream document with only `download_url`, `shasums_url` and
 * `shasums_signature_url` pointed at Repoxy.
 */
export const registryDownload: RouteHandler<"registryDownload"> = async (req, ctx, r, s) => {
  const { provider: p, version } = r;
  // An unlisted platform may need a search for SHA256SUMS: bounded by the deadline.
  const got = await withDeadline(
    req,
    ctx,
    (signal) => s.source.downloadDocument(p, version, r, signal),
  );
  ctx.cache = got.status;
  const base = s.config.publicUrl ?? "/";
  const path = providerString(p);
  // With client auth, each URL carries this request's signed link (Terraform sends no token there).
  const link = (rooted: string) => `${base}${rooted.slice(1)}${ctx.signUrl?.(rooted) ?? ""}`;
  const body = rewriteDownloadDoc(got.value.raw, {
    download_url: link(`/${path}/${archiveFilename(p.type, version, r)}`),
    shasums_url: link(`/v1/providers/${path}/${version}/SHA256SUMS`),
    shasums_signature_url: link(`/v1/providers/${path}/${version}/SHA256SUMS.sig`),
  });
  return keptJson(req, ctx, s.answers, body, got);
};

/** `GET /v1/providers/{host}/{ns}/{type}/{version}/SHA256SUMS[.sig]`, byte for byte. */
export const registrySums: RouteHandler<"registrySums"> = async (req, ctx, r, s) => {
  const got = await withDeadline(
    req,
    ctx,
    (signal) => s.source.checksums(r.provider, r.version, signal),
  );
  ctx.cache = got.status;
  const bytes = r.signature ? got.value.signature : got.value.sums;
  if (!bytes) {
    throw new NotFoundError(`upstream ${r.provider.hostname} offers no signature for ${r.version}`);
  }
  const headers = new Headers({
    "content-type": r.signature ? "application/octet-stream" : "text/plain; charset=utf-8",
    "content-length": String(bytes.length),
    "cache-control": "public, max-age=31536000, immutable",
    "x-repoxy-cache": got.status,
  });
  return new Response(req.method === "HEAD" ? null : bytes as BodyInit, { status: 200, headers });
};
