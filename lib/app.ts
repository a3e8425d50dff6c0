/**
 * The Repoxy application: `createApp(config, deps)` wires the stores, the
 * upstream clients and the routes into one request handler. Everything with a
 * side effect outside the cache dir (fetch, clock, logging) is injected, so
 * most tests call `app.handle(new Request(...))` without a socket.
 * @module
 */
import { resetDir } from "./cache/atomic_write.ts";
import { type CacheDir, defaultTmpDir, openCacheDir } from "./cache/cache_dir.ts";
import { Downloads } from "./cache/download.ts";
import { verifyingStream } from "./integrity/verifying_stream.ts";
import type { Config } from "./config/config.ts";
import {
  errorResponse,
  HttpError,
  INTERNAL_ERROR_MESSAGE,
  NotFoundError,
  UpstreamError,
  UpstreamTimeoutError,
} from "./http/errors.ts";
import { DiskError } from "./cache/storage.ts";
import { type RunningServer, startServer } from "./http/server.ts";
import { CacheInventory } from "./cache/inventory.ts";
import { createLogger, type Logger } from "./base/log.ts";
import { listCachedPlatforms, listCachedVersions } from "./cache/local_index.ts";
import {
  type CacheStatus,
  type DownloadValue,
  Metadata,
  worstStatus,
} from "./upstream/metadata.ts";
import {
  type MirrorArchive,
  mirrorIndexJson,
  mirrorVersionJson,
  rewriteDownloadDoc,
} from "./protocol/mirror_json.ts";
import { archiveFilename, type PlatformRef, type ProviderRef } from "./protocol/names.ts";
import { metricsResponse, readyResponse, statusPageResponse } from "./routes/operator.ts";
import type { PackageStore } from "./cache/package_store.ts";
import { QuotaKeeper } from "./cache/quota.ts";
import { refKeys } from "./cache/refs_store.ts";
import { ResponseCache } from "./http/response_cache.ts";
import { BadPathError, type ModuleRef, parseRoute, type Route } from "./protocol/paths.ts";
import {
  type BodyEnd,
  bodyEtag,
  serveBody,
  serveFile,
  trackBody,
  utf8Length,
} from "./http/serve_file.ts";
import { parseSha256Sums } from "./protocol/sha256sums.ts";
import { Telemetry } from "./ops/telemetry.ts";
import { type FetchFn, UpstreamClient, type UpstreamRequestInfo } from "./upstream/client.ts";
import { USER_AGENT, VERSION } from "./base/version.ts";

/** Injected dependencies; every field has a real default. */
export interface AppDeps {
  fetch?: FetchFn;
  log?: Logger;
  now?: () => number;
  /** Called for every upstream HTTP request (tests count them; metrics get them anyway). */
  onUpstreamRequest?: (info: UpstreamRequestInfo) => void;
  /** Waits between upstream retries. */
  sleep?: (ms: number) => Promise<void>;
  /** Idle timeout of archive downloads, in ms. */
  downloadIdleTimeoutMs?: number;
  /** Deadline for a whole metadata answer, in ms (default: upstreamTimeout + 1.5 s, at most 9.5 s). */
  requestDeadlineMs?: number;
  /** Temp dir (emptied at start); default `<cacheDir>/tmp`. CLI commands use their own. */
  tmpDir?: string;
}

/** Per-request facts gathered for the access log. */
interface RequestContext {
  route: Route["kind"] | "none";
  cache: CacheStatus | undefined;
  /** Set when the response body writes the access log line itself, when it ends. */
  reported?: boolean;
  /** Request path, once routing parsed the URL. */
  path: string;
  /** Refs generation when the request began (see response_cache.ts). */
  generation: number;
  /** Writes the access log line for this request. */
  done: (end: BodyEnd) => void;
}

/** A running Repoxy instance (without the listening socket). */
export interface App {
  readonly config: Config;
  readonly log: Logger;
  /** The cache directory's stores. */
  readonly cache: CacheDir;
  readonly packages: PackageStore;
  /** Archive downloads in flight (single-flight). */
  readonly downloads: Downloads;
  readonly metadata: Metadata;
  /** Metrics and upstream health (served at `/-/metrics` and `/`). */
  readonly telemetry: Telemetry;
  /** The archives in `packages/`, kept in memory for metrics and the status page. */
  readonly inventory: CacheInventory;
  /** Handles one request. Never throws: errors become JSON responses. */
  handle(req: Request): Promise<Response>;
  /** Waits for in-flight downloads and background jobs. */
  settle(): Promise<void>;
  /** Aborts upstream work (downloads in flight fail and clean up). */
  close(): Promise<void>;
}

const JSON_HEADERS = { "content-type": "application/json" };

/** A JSON body ready to send: text, its UTF-8 length and its ETag. */
interface EncodedJson {
  text: string;
  length: number;
  etag: string;
}

const encoder = new TextEncoder();

function encodeJson(text: string): EncodedJson {
  return { text, length: utf8Length(text), etag: bodyEtag(text) };
}

/** A metadata answer: short max-age, an ETag of the body, 304 on If-None-Match. */
function jsonResponse(
  req: Request,
  body: string | EncodedJson,
  cache: CacheStatus | undefined,
  maxAge = 60,
): Response {
  const enc = typeof body === "string" ? encodeJson(body) : body;
  return serveBody(req, enc.text, {
    contentType: "application/json",
    cacheControl: `public, max-age=${maxAge}`,
    etag: enc.etag,
    length: enc.length,
    ...(cache ? { headers: { "x-repoxy-cache": cache } } : {}),
  });
}

/** The path of an absolute request URL, without parsing it (a cache key only). */
function pathOf(url: string): string {
  const start = url.indexOf("/", url.indexOf("//") + 2);
  if (start < 0) return "/";
  const q = url.indexOf("?", start);
  return q < 0 ? url.slice(start) : url.slice(start, q);
}

/**
 * Creates the application. Prepares the cache directory (and empties `tmp/`).
 */
export async function createApp(config: Config, deps: AppDeps = {}): Promise<App> {
  const log = deps.log ?? createLogger(config.logFormat);
  const now = deps.now ?? Date.now;
  const fetchFn = deps.fetch ?? ((input, init) => fetch(input, init));
  const shutdown = new AbortController();
  const requestDeadlineMs = deps.requestDeadlineMs ??
    Math.min(9_500, config.upstreamTimeoutMs + 1_500);

  const tmpDir = deps.tmpDir ?? defaultTmpDir(config.cacheDir);
  const removed = await resetDir(tmpDir);
  if (removed > 0) log.warn("removed leftover temp files from an earlier run", { count: removed });

  // Every stored archive goes into the inventory and, with a quota, may evict others.
  let quota: QuotaKeeper | undefined;
  const cache = await openCacheDir(config.cacheDir, log, {
    tmpDir,
    now,
    onStored: (p, v, pl, size, key) => {
      inventory.add(p, v, pl, size);
      quota?.afterStore(key);
    },
  });
  const { refs, packages } = cache;
  if (config.maxCacheSizeBytes !== undefined) {
    quota = new QuotaKeeper(cache, config.maxCacheSizeBytes, log);
  }
  const downloads = new Downloads(packages, log, {
    ...(deps.downloadIdleTimeoutMs ? { idleTimeoutMs: deps.downloadIdleTimeoutMs } : {}),
    now,
  });
  // Walked once here; afterwards the store's hook keeps it current.
  const inventory = new CacheInventory(cache.storage);
  await inventory.scan();
  const telemetry = new Telemetry({
    version: VERSION,
    upstreams: [...config.upstreams.keys()],
    inventory,
    // Read at scrape time, after `packages` exists.
    inflightDownloads: () => downloads.count,
    now,
  });
  const onUpstreamRequest = (info: UpstreamRequestInfo) => {
    telemetry.onUpstream(info);
    deps.onUpstreamRequest?.(info);
  };
  const clients = new Map<string, UpstreamClient>();
  for (const [host, up] of config.upstreams) {
    clients.set(
      host,
      new UpstreamClient(up, {
        fetch: fetchFn,
        log,
        userAgent: USER_AGENT,
        timeoutMs: config.upstreamTimeoutMs,
        signal: shutdown.signal,
        ...(deps.sleep ? { sleep: deps.sleep } : {}),
        onRequest: onUpstreamRequest,
      }),
    );
  }
  const metadata = new Metadata(config, refs, clients, log, now);
  const ops = {
    config,
    telemetry,
    inventory,
    inflightDownloads: () => downloads.count,
    now,
    version: VERSION,
  };

  const answers = new ResponseCache(() => refs.generation, now);

  /**
   * Sends a metadata answer and keeps it for the same path while every input
   * stays current: no refs write since the request began, and the version
   * list (when it depends on one) still fresh.
   */
  function keptJson(
    req: Request,
    ctx: RequestContext,
    body: string | EncodedJson,
    status: CacheStatus,
    freshUntil: number,
  ): Response {
    const enc = typeof body === "string" ? encodeJson(body) : body;
    if (status !== "stale") {
      answers.put(ctx.path, {
        ...enc,
        route: ctx.route,
        maxAge: 60,
        generation: ctx.generation,
        expiresAt: config.offline ? Infinity : freshUntil,
      });
    }
    return jsonResponse(req, enc, status);
  }

  // Rendered and parsed forms, keyed by the memoised values Metadata returns
  // (same object until the stored entry changes), so they go with the entry.
  const indexBodies = new WeakMap<object, EncodedJson>();
  /** {version}.json by version entry, with the hashes it was rendered from. */
  const versionBodies = new WeakMap<object, EncodedJson & { hashes: string[] }>();
  const parsedSums = new WeakMap<Uint8Array, Map<string, string>>();

  /** SHA256SUMS of a version as filename → sha256, or undefined when unavailable. */
  async function sumsFor(p: ProviderRef, version: string, pl: PlatformRef) {
    const dl = await metadata.download(p, version, pl);
    if (!dl.value.doc.shasums_url) return { map: undefined, status: dl.status };
    const s = await metadata.sums(p, version, dl.value);
    let map = parsedSums.get(s.value.sums);
    if (!map) {
      map = parseSha256Sums(new TextDecoder().decode(s.value.sums));
      parsedSums.set(s.value.sums, map);
    }
    return {
      map,
      status: worstStatus(dl.status, s.status),
    };
  }

  async function mirrorIndex(req: Request, ctx: RequestContext, p: ProviderRef): Promise<Response> {
    const got = await metadata.versions(p);
    ctx.cache = got.status;
    let body = indexBodies.get(got.value);
    if (!body) {
      body = encodeJson(mirrorIndexJson(got.value.versions.map((v) => v.version)));
      indexBodies.set(got.value, body);
    }
    return keptJson(req, ctx, body, got.status, got.fetchedAt + config.metadataTtlMs);
  }

  /**
   * Offline, the network mirror lists only what is cached: a listed version or
   * platform that then cannot be served would abort the client, while an
   * unlisted one lets it try its next source. Answered from the archives on
   * disk, so providers brought by `repoxy import` are served too.
   */
  async function offlineIndex(req: Request, ctx: RequestContext, p: ProviderRef) {
    const versions = await listCachedVersions(cache, p);
    if (versions.length === 0) {
      throw new NotFoundError(`nothing of ${providerPath(p)} is cached and this mirror is offline`);
    }
    ctx.cache = "hit";
    return jsonResponse(req, mirrorIndexJson(versions), "hit");
  }

  async function offlineVersion(
    req: Request,
    ctx: RequestContext,
    p: ProviderRef,
    version: string,
  ) {
    const local = await listCachedPlatforms(cache, p, version);
    if (local.length === 0) {
      throw new NotFoundError(
        `${providerPath(p)} ${version} is not cached and this mirror is offline`,
      );
    }
    for (const a of local) {
      if (!a.meta.h1) packages.ensureH1(p, version, a.platform).catch(() => {});
    }
    ctx.cache = "hit";
    return jsonResponse(
      req,
      mirrorVersionJson(local.map((a) => ({
        platform: `${a.platform.os}_${a.platform.arch}`,
        url: a.filename,
        hashes: [...(a.meta.h1 ? [a.meta.h1] : []), `zh:${a.meta.sha256}`],
      }))),
      "hit",
    );
  }

  async function mirrorVersion(req: Request, ctx: RequestContext, p: ProviderRef, version: string) {
    const entry = await metadata.versionEntry(p, version);
    const platforms = entry.value.platforms ?? [];
    if (platforms.length === 0) {
      throw new UpstreamError(
        `upstream ${p.hostname} lists ${p.namespace}/${p.type} ${version} with no platforms`,
      );
    }
    const statuses: Array<CacheStatus | undefined> = [entry.status];
    const sums = await sumsFor(p, version, platforms[0]!);
    statuses.push(sums.status);
    const archives: MirrorArchive[] = [];
    const allHashes: string[] = [];
    for (const pl of platforms) {
      const filename = archiveFilename(p.type, version, pl);
      let zh = sums.map?.get(filename);
      if (!zh) {
        const dl = await metadata.download(p, version, pl);
        statuses.push(dl.status);
        zh = dl.value.doc.shasum.toLowerCase();
      }
      const hashes: string[] = [];
      const meta = await packages.meta(p, version, pl);
      if (meta?.h1) hashes.push(meta.h1);
      else if (meta) packages.ensureH1(p, version, pl).catch(() => {});
      hashes.push(`zh:${zh}`);
      allHashes.push(...hashes, "");
      archives.push({ platform: `${pl.os}_${pl.arch}`, url: filename, hashes });
    }
    ctx.cache = worstStatus(...statuses);
    // The document depends only on the entry's platforms and these hashes, so
    // rendering, encoding and the ETag are redone only when a hash changes
    // (an archive got cached, or its h1 was computed).
    let body = versionBodies.get(entry.value);
    if (
      !body || body.hashes.length !== allHashes.length ||
      body.hashes.some((h, i) => h !== allHashes[i])
    ) {
      body = { ...encodeJson(mirrorVersionJson(archives)), hashes: allHashes };
      versionBodies.set(entry.value, body);
    }
    return keptJson(req, ctx, body, ctx.cache, entry.fetchedAt + config.metadataTtlMs);
  }

  async function archive(
    req: Request,
    ctx: RequestContext,
    p: ProviderRef,
    version: string,
    pl: PlatformRef,
  ) {
    let cached = await packages.open(p, version, pl);
    if (!cached) {
      // Another process (warm, import) may have stored it since we last looked.
      packages.refs.forget(refKeys.archive(p, version, pl));
      cached = await packages.open(p, version, pl);
    }
    if (cached) {
      ctx.cache = "hit";
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
    if (config.offline) {
      throw new NotFoundError(
        `${archiveFilename(p.type, version, pl)} is not cached and this mirror is offline`,
      );
    }
    const joined = downloads.inflight(p, version, pl);
    const dl = joined ? undefined : await metadata.verifiedDownload(p, version, pl);
    const client = metadata.client(p.hostname);
    const d = joined ?? downloads.start(p, version, pl, {
      open: (signal) =>
        client.get(new URL(dl!.value.doc.download_url, dl!.value.url), {
          signal,
          accept: "application/zip, */*",
        }),
      expectedSha256: dl!.value.doc.shasum,
      signal: shutdown.signal,
    });
    try {
      await d.ready;
    } catch (e) {
      if (!(e instanceof DiskError) || !dl) throw e;
      log.error("cache not writable; streaming the archive without caching it", {
        path: new URL(req.url).pathname,
        error: e.message,
      });
      return await passThrough(req, ctx, p, dl.value);
    }
    ctx.cache = "miss";
    const headers = new Headers({ "content-type": "application/zip", "x-repoxy-cache": "miss" });
    if (d.expectedSize !== undefined) headers.set("content-length", String(d.expectedSize));
    if (req.method === "HEAD") return new Response(null, { status: 200, headers });
    ctx.reported = true;
    return new Response(trackBody(req, d.reader(), 200, ctx.done), { status: 200, headers });
  }

  /** Streams an archive from upstream to the client, verified, without caching it. */
  async function passThrough(req: Request, ctx: RequestContext, p: ProviderRef, dl: DownloadValue) {
    const client = metadata.client(p.hostname);
    const { res, url } = await client.get(new URL(dl.doc.download_url, dl.url), {
      signal: shutdown.signal,
    });
    if (res.status !== 200 || !res.body) {
      await res.body?.cancel();
      throw new UpstreamError(
        `download host ${url.host} answered ${res.status} for ${url.pathname}`,
      );
    }
    ctx.cache = "miss";
    const headers = new Headers({ "content-type": "application/zip", "x-repoxy-cache": "bypass" });
    const len = res.headers.get("content-length");
    if (len && /^\d+$/.test(len)) headers.set("content-length", len);
    if (req.method === "HEAD") {
      await res.body.cancel();
      return new Response(null, { status: 200, headers });
    }
    const body = verifyingStream(
      res.body,
      dl.doc.shasum,
      (e) => new UpstreamError(`archive ${e.message}`),
    );
    return new Response(body, { status: 200, headers });
  }

  async function registryVersions(req: Request, ctx: RequestContext, p: ProviderRef) {
    const got = await metadata.versions(p);
    ctx.cache = got.status;
    if (!config.offline) {
      return keptJson(req, ctx, got.value.raw, got.status, got.fetchedAt + config.metadataTtlMs);
    }
    // Offline, only versions and platforms whose archive is cached are offered
    // (the client would otherwise pick one it then cannot download).
    const doc = JSON.parse(got.value.raw) as {
      versions: Array<{ version: string; platforms?: PlatformRef[] }>;
    };
    const kept = [];
    for (const v of doc.versions) {
      const local = await listCachedPlatforms(cache, p, v.version);
      if (local.length === 0) continue;
      const have = new Set(local.map((a) => `${a.platform.os}_${a.platform.arch}`));
      kept.push({
        ...v,
        platforms: (v.platforms ?? []).filter((pl) => have.has(`${pl.os}_${pl.arch}`)),
      });
    }
    if (kept.length === 0) {
      throw new NotFoundError(`nothing of ${providerPath(p)} is cached and this mirror is offline`);
    }
    return jsonResponse(req, JSON.stringify({ ...doc, versions: kept }), got.status);
  }

  function providerPath(p: ProviderRef) {
    return `${p.hostname}/${p.namespace}/${p.type}`;
  }

  async function registryDownload(
    req: Request,
    ctx: RequestContext,
    p: ProviderRef,
    version: string,
    pl: PlatformRef,
  ) {
    const dl = await metadata.download(p, version, pl);
    ctx.cache = dl.status;
    const base = config.publicUrl ?? "/";
    const body = rewriteDownloadDoc(dl.value.raw, {
      download_url: `${base}${providerPath(p)}/${archiveFilename(p.type, version, pl)}`,
      shasums_url: `${base}v1/providers/${providerPath(p)}/${version}/SHA256SUMS`,
      shasums_signature_url: `${base}v1/providers/${providerPath(p)}/${version}/SHA256SUMS.sig`,
    });
    return keptJson(req, ctx, body, dl.status, Infinity);
  }

  async function registrySums(
    req: Request,
    ctx: RequestContext,
    p: ProviderRef,
    version: string,
    sig: boolean,
  ) {
    const entry = await metadata.versionEntry(p, version);
    const pl = entry.value.platforms?.[0];
    if (!pl) throw new NotFoundError(`${providerPath(p)} ${version} lists no platforms`);
    const dl = await metadata.download(p, version, pl);
    const s = await metadata.sums(p, version, dl.value);
    ctx.cache = worstStatus(entry.status, dl.status, s.status);
    const bytes = sig ? s.value.signature : s.value.sums;
    if (!bytes) {
      throw new NotFoundError(`upstream ${p.hostname} offers no signature for ${version}`);
    }
    const headers = new Headers({
      "content-type": sig ? "application/octet-stream" : "text/plain; charset=utf-8",
      "content-length": String(bytes.length),
      "cache-control": "public, max-age=31536000, immutable",
      "x-repoxy-cache": ctx.cache,
    });
    return new Response(req.method === "HEAD" ? null : bytes as BodyInit, { status: 200, headers });
  }

  function wellKnown(req: Request): Response {
    return jsonResponse(
      req,
      JSON.stringify({ "modules.v1": "/v1/modules/", "providers.v1": "/v1/providers/" }) + "\n",
      undefined,
      300,
    );
  }

  /**
   * Module registry answers are passed through (not cached): a `host` block
   * replaces the whole discovery document, so without `modules.v1` module
   * installs from that registry would break. Relative locations are made
   * absolute against the upstream URL, which the client no longer sees.
   */
  async function modulePassThrough(
    req: Request,
    ctx: RequestContext,
    m: ModuleRef,
    suffix: string,
  ) {
    if (config.offline) {
      throw new NotFoundError("module registry answers are not cached and this mirror is offline");
    }
    const base = await metadata.serviceBase(m.hostname, "modules.v1");
    const client = metadata.client(m.hostname);
    const url = new URL(`${m.namespace}/${m.name}/${m.system}/${suffix}`, base);
    const { res, url: final } = await client.get(url, {
      accept: "application/json",
      signal: AbortSignal.timeout(config.upstreamTimeoutMs),
    });
    ctx.cache = "miss";
    if (res.status === 404) {
      await res.body?.cancel();
      throw new NotFoundError(
        `upstream ${m.hostname} has no module ${m.namespace}/${m.name}/${m.system}`,
      );
    }
    if (res.status !== 200 && res.status !== 204) {
      await res.body?.cancel();
      throw new UpstreamError(
        `upstream ${m.hostname} answered ${res.status} for ${final.pathname}`,
      );
    }
    const len = Number(res.headers.get("content-length") ?? "0");
    if (len > 1024 * 1024) {
      await res.body?.cancel();
      throw new UpstreamError(`upstream ${m.hostname} sent an oversized module document`);
    }
    const absolute = (loc: string) =>
      /^(\/|\.\/|\.\.\/)/.test(loc) ? new URL(loc, final).href : loc;
    let body = res.status === 204 ? "" : await res.text();
    const headers = new Headers({ "cache-control": "no-store", "x-repoxy-cache": "miss" });
    headers.set("content-type", res.headers.get("content-type") ?? "application/json");
    const get = res.headers.get("x-terraform-get");
    if (get) headers.set("x-terraform-get", absolute(get));
    if (body && suffix.endsWith("download")) {
      try {
        const doc = JSON.parse(body);
        if (doc && typeof doc.location === "string") {
          doc.location = absolute(doc.location);
          body = JSON.stringify(doc);
        }
      } catch { /* not JSON: pass through as is */ }
    }
    if (res.status !== 204) headers.set("content-length", String(utf8Length(body)));
    return new Response(req.method === "HEAD" || res.status === 204 ? null : body, {
      status: res.status,
      headers,
    });
  }

  function health(req: Request): Response {
    const h = new Headers(JSON_HEADERS);
    h.set("cache-control", "no-store");
    const body = encoder.encode(JSON.stringify({ status: "ok", version: VERSION }) + "\n");
    h.set("content-length", String(body.length));
    return new Response(req.method === "HEAD" ? null : body as BodyInit, {
      status: 200,
      headers: h,
    });
  }

  async function route(req: Request, ctx: RequestContext): Promise<Response> {
    const url = new URL(req.url);
    ctx.path = url.pathname;
    // Everything Repoxy serves is read-only.
    if (req.method !== "GET" && req.method !== "HEAD") {
      throw new HttpError(405, `method ${req.method} is not allowed; use GET or HEAD`, {
        allow: "GET, HEAD",
      });
    }
    const r = parseRoute(url.pathname, config.defaultUpstream);
    if (!r) throw new NotFoundError(`nothing is served at ${url.pathname}`);
    ctx.route = r.kind;
    // 404 for unknown registries, before any work.
    if ("provider" in r) metadata.client(r.provider.hostname);
    if ("module" in r) metadata.client(r.module.hostname);
    switch (r.kind) {
      case "wellKnown":
        return wellKnown(req);
      case "health":
        return health(req);
      case "ready":
        return await readyResponse(req, config.cacheDir);
      case "metrics":
        return metricsResponse(req, telemetry);
      case "status":
        return statusPageResponse(req, ops);
      case "mirrorIndex":
        return config.offline
          ? await offlineIndex(req, ctx, r.provider)
          : await mirrorIndex(req, ctx, r.provider);
      case "mirrorVersion":
        return config.offline
          ? await offlineVersion(req, ctx, r.provider, r.version)
          : await mirrorVersion(req, ctx, r.provider, r.version);
      case "archive":
        return await archive(req, ctx, r.provider, r.version, r);
      case "registryVersions":
        return await registryVersions(req, ctx, r.provider);
      case "registryDownload":
        return await registryDownload(req, ctx, r.provider, r.version, r);
      case "registrySums":
        return await registrySums(req, ctx, r.provider, r.version, r.signature);
      case "moduleVersions":
        return await modulePassThrough(req, ctx, r.module, "versions");
      case "moduleDownload":
        return await modulePassThrough(req, ctx, r.module, `${r.version}/download`);
    }
  }

  function accessLog(
    req: Request,
    path: string,
    ctx: RequestContext,
    end: BodyEnd,
    started: number,
  ) {
    log.info("request", {
      method: req.method,
      path,
      status: end.status,
      bytes: end.bytes,
      ms: Math.round((performance.now() - started) * 10) / 10,
      cache: ctx.cache ?? "-",
      ...(end.note ? { note: end.note } : {}),
    });
  }

  /**
   * Metadata answers must beat the client's 10 s timeout even when an upstream
   * hangs mid-chain (discovery, then versions, then documents): past the
   * deadline the client gets a 504 while the fetch goes on and fills the cache.
   */
  function withDeadline(req: Request, ctx: RequestContext): Promise<Response> {
    const work = route(req, ctx);
    if (ctx.route === "archive") return work;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        work.then((r) => r.body?.cancel()).catch(() => {});
        reject(new UpstreamTimeoutError("the upstream did not answer in time; try again shortly"));
      }, requestDeadlineMs);
    });
    return Promise.race([work, deadline]).finally(() => clearTimeout(timer));
  }

  async function handle(req: Request): Promise<Response> {
    const started = performance.now();
    const ctx: RequestContext = {
      route: "none",
      cache: undefined,
      path: "",
      generation: refs.generation,
      done: (end) => {
        telemetry.onBytes(ctx.route, end.bytes);
        accessLog(req, ctx.path || new URL(req.url).pathname, ctx, end, started);
      },
    };
    if (req.method === "GET" || req.method === "HEAD") {
      const path = pathOf(req.url);
      const kept = answers.get(path);
      if (kept) {
        ctx.path = path;
        ctx.cache = "hit";
        ctx.route = kept.route as Route["kind"];
        const res = jsonResponse(req, kept, "hit", kept.maxAge);
        telemetry.onRequest(ctx.route, res.status, (performance.now() - started) / 1000, "hit");
        const bytes = req.method === "HEAD" || res.status === 304 ? 0 : kept.length;
        ctx.done({ status: res.status, bytes });
        return res;
      }
    }
    let res: Response;
    try {
      res = await withDeadline(req, ctx);
    } catch (e) {
      ctx.reported = false;
      if (e instanceof HttpError) res = e.toResponse();
      else if (e instanceof BadPathError) res = errorResponse(400, e.message);
      else {
        const status = e instanceof Deno.errors.NotFound ? 404 : 500;
        if (status === 500) {
          log.error("internal error", {
            path: new URL(req.url).pathname,
            error: (e as Error)?.stack ?? String(e),
          });
        }
        res = errorResponse(status, INTERNAL_ERROR_MESSAGE);
      }
    }
    telemetry.onRequest(ctx.route, res.status, (performance.now() - started) / 1000, ctx.cache);
    // Streamed archive bodies log when they end (bytes sent, client aborts);
    // every other body is a complete buffer, logged now. No wrapper stream
    // here: it would cost a stream hop per chunk, and archive bodies must
    // reach Deno.serve unwrapped (see markSocketRequest in serve_file.ts).
    if (!ctx.reported) {
      const bytes = req.method === "HEAD" ? 0 : Number(res.headers.get("content-length") ?? 0);
      ctx.done({ status: res.status, bytes });
    }
    return res;
  }

  return {
    config,
    log,
    cache,
    packages,
    downloads,
    metadata,
    telemetry,
    inventory,
    handle,
    async settle() {
      await metadata.settle();
      await downloads.settle();
      await quota?.idle();
    },
    async close() {
      shutdown.abort();
      await metadata.settle();
      await downloads.settle();
      await quota?.idle();
      // Whatever an aborted download left behind goes now, not at next start.
      await resetDir(tmpDir).catch(() => {});
    },
  };
}

/**
 * Serves `app` on its configured address; shutting the server down also
 * closes the app (stops downloads, removes their temp files).
 */
export function serveApp(app: App): RunningServer {
  return startServer(app.handle, {
    ...app.config.listen,
    tls: app.config.tls,
    log: app.log,
    onDrained: () => app.close(),
  });
}
