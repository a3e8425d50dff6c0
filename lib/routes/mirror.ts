/**
 * The provider network mirror protocol: `index.json`, `{version}.json` and
 * the archives (which the registry protocol's `download_url` points at too,
 * so one cache serves both protocols).
 * @module
 */
import { serveFile, trackBody } from "../http/serve_file.ts";
import { mirrorIndexJson, mirrorVersionJson } from "../protocol/mirror_json.ts";
import type { VersionArchives, VersionList } from "../sources/source.ts";
import { type RouteHandler } from "./context.ts";
import { type EncodedJson, encodeJson, keptJson } from "./json_answer.ts";
import { refKeys } from "../cache/refs_store.ts";
import { ByteLru } from "../cache/byte_lru.ts";
import { withDeadline } from "./deadline.ts";

// Renderings kept beside the source's memoised values (same object while the
// input is unchanged), so they go when those go. `{version}.json` renderings
// are bounded by bytes too (an eighth of limits.metadataMemory): one kept
// version list can have thousands of versions, each rendered once.
const indexBodies = new WeakMap<VersionList, EncodedJson>();
const versionBodies = new ByteLru<object, EncodedJson & { hashes: string[] }>(8 * 2 ** 20);

/** `GET /{host}/{ns}/{type}/index.json`: every version a client may pick. */
export const mirrorIndex: RouteHandler<"mirrorIndex"> = async (req, ctx, r, s) => {
  const got = await s.source.versionList(r.provider);
  ctx.cache = got.status;
  let body = indexBodies.get(got.value);
  if (!body) {
    body = encodeJson(mirrorIndexJson(got.value.versions));
    // An answer that may not be kept is built afresh every time: no memo.
    if (got.keepUntil > 0) indexBodies.set(got.value, body);
  }
  return keptJson(req, ctx, s.answers, body, got);
};

/** `GET /{host}/{ns}/{type}/{version}.json`: every platform's archive with its hashes. */
export const mirrorVersion: RouteHandler<"mirrorVersion"> = async (req, ctx, r, s) => {
  // The platforms are fetched only while this client (or another asking the same) waits.
  const got = await withDeadline(
    req,
    ctx,
    (signal) => s.source.versionArchives(r.provider, r.version, signal),
  );
  ctx.cache = got.status;
  versionBodies.resize(Math.floor(s.config.limits.metadataMemoryBytes / 8));
  const sign = ctx.signUrl;
  // Signed links are this request's own: rendered afresh, never memoised.
  const body = sign
    ? encodeJson(
      mirrorVersionJson(got.value.archives.map((a) => ({ ...a, url: a.url + sign(a.url) }))),
    )
    : got.keepUntil > 0
    ? renderVersion(got.value)
    : encodeJson(mirrorVersionJson(got.value.archives));
  return keptJson(req, ctx, s.answers, body, got);
};

/**
 * The document depends only on the platforms and their hashes, so rendering,
 * encoding and the ETag are redone only when a hash changes (an archive got
 * cached, or its h1 was computed).
 */
function renderVersion(v: VersionArchives): EncodedJson {
  const hashes = v.archives.flatMap((a) => [...a.hashes, ""]);
  let body = versionBodies.get(v.memoKey);
  if (
    !body || body.hashes.length !== hashes.length || body.hashes.some((h, i) => h !== hashes[i])
  ) {
    body = { ...encodeJson(mirrorVersionJson(v.archives)), hashes };
    // Charged as UTF-16 text plus the hash list (whose strings are shared).
    versionBodies.set(v.memoKey, body, 2 * body.text.length + 8 * hashes.length + 128);
  }
  return body;
}

/**
 * `GET /{host}/{ns}/{type}/terraform-provider-…zip`: a cached archive from
 * storage, else from the source (a download into the cache that this client
 * reads behind the writer, or a verified pass-through when the cache cannot
 * be written).
 */
export const archive: RouteHandler<"archive"> = async (req, ctx, r, s) => {
  const { provider: p, version } = r;
  let cached = await s.packages.open(p, version, r);
  if (!cached) {
    // Another process (warm, import) may have stored it since we last looked.
    // Reloaded, not forgotten: only a record that really changed may
    // invalidate the kept answers (a made-up platform must not).
    await s.refs.reload(refKeys.archive(p, version, r));
    cached = await s.packages.open(p, version, r);
  }
  if (cached) {
    ctx.cache = "hit";
    // No await at all on the disk-only path (the warm archive hot path).
    const presigned = s.bucket ? await s.bucket.redirect(cached.object) : undefined;
    if (presigned) {
      // storage.redirect: the client fetches the verified object from the bucket.
      cached.object.close();
      return new Response(null, {
        status: 302,
        headers: { location: presigned, "cache-control": "no-store", "x-repoxy-cache": "hit" },
      });
    }
    await cached.object.markServing();
    const res = serveFile(req, {
      file: cached.object,
      size: cached.object.size,
      mtime: cached.object.mtime,
      sha256: cached.meta.sha256,
      contentType: "application/zip",
    }, { headers: { "x-repoxy-cache": "hit" }, onFinish: ctx.done });
    ctx.reported = true;
    return res;
  }
  const got = await s.source.fetchArchive(p, version, r);
  ctx.cache = "miss";
  const headers = new Headers({
    "content-type": "application/zip",
    "x-repoxy-cache": got.kind === "bypass" ? "bypass" : "miss",
  });
  const size = got.kind === "bypass" ? got.size : got.download.expectedSize;
  if (size !== undefined) headers.set("content-length", String(size));
  if (req.method === "HEAD") {
    if (got.kind === "bypass") await got.body.cancel();
    return new Response(null, { status: 200, headers });
  }
  if (got.kind === "bypass") return new Response(got.body, { status: 200, headers });
  ctx.reported = true;
  return new Response(trackBody(req, got.download.reader(), 200, ctx.done), {
    status: 200,
    headers,
  });
};
