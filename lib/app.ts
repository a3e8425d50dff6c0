/**
 * The Repoxy application: `createApp(config, deps)` wires the stores, the
 * upstream clients and the routes into one request handler. Everything with a
 * side effect outside the cache dir (fetch, clock, logging) is injected, so
 * most tests call `app.handle(new Request(...))` without a socket.
 * @module
 */
import { resetDir } from "./atomic_write.ts";
import type { Config } from "./config.ts";
import { join } from "./deps/path.ts";
import { errorResponse, HttpError, NotFoundError, toErrorStatus, UpstreamError } from "./errors.ts";
import { createLogger, type Logger } from "./log.ts";
import { type CacheStatus, Metadata } from "./metadata.ts";
import {
  type MirrorArchive,
  mirrorIndexJson,
  mirrorVersionJson,
  rewriteDownloadDoc,
} from "./mirror_json.ts";
import { archiveFilename, type PlatformRef, type ProviderRef } from "./names.ts";
import { PackageStore } from "./package_store.ts";
import { RefsStore } from "./refs_store.ts";
import { ResponseCache } from "./response_cache.ts";
import { BadPathError, parseRoute, type Route } from "./router.ts";
import {
  type BodyEnd,
  bodyEtag,
  serveBody,
  serveFile,
  trackBody,
  utf8Length,
} from "./serve_file.ts";
import { parseSha256Sums } from "./signature.ts";
import { type FetchFn, UpstreamClient } from "./upstream.ts";
import { USER_AGENT, VERSION } from "./version.ts";

/** Injected dependencies; every field has a real default. */
export interface AppDeps {
  fetch?: FetchFn;
  log?: Logger;
  now?: () => number;
  /** Called for every upstream HTTP request (tests count them; metrics later). */
  onUpstreamRequest?: (info: { hostname: string; url: string; status: number | "error" }) => void;
  /** Waits between upstream retries. */
  sleep?: (ms: number) => Promise<void>;
  /** Idle timeout of archive downloads, in ms. */
  downloadIdleTimeoutMs?: number;
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
  readonly packages: PackageStore;
  readonly metadata: Metadata;
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

/** Combines cache statuses: any stale part makes the answer stale, any miss a miss. */
function worst(...s: Array<CacheStatus | undefined>): CacheStatus {
  if (s.includes("stale")) return "stale";
  if (s.includes("miss")) return "miss";
  return "hit";
}

/**
 * Creates the application. Prepares the cache directory (and empties `tmp/`).
 */
export async function createApp(config: Config, deps: AppDeps = {}): Promise<App> {
  const log = deps.log ?? createLogger(config.logFormat);
  const now = deps.now ?? Date.now;
  const fetchFn = deps.fetch ?? ((input, init) => fetch(input, init));
  const shutdown = new AbortController();

  const tmpDir = join(config.cacheDir, "tmp");
  await Deno.mkdir(join(config.cacheDir, "refs"), { recursive: true });
  await Deno.mkdir(join(config.cacheDir, "packages"), { recursive: true });
  const removed = await resetDir(tmpDir);
  if (removed > 0) log.warn("removed leftover temp files from an earlier run", { count: removed });

  const refs = new RefsStore(config.cacheDir, tmpDir);
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
        ...(deps.onUpstreamRequest ? { onRequest: deps.onUpstreamRequest } : {}),
      }),
    );
  }
  const metadata = new Metadata(config, refs, clients, log, now);
  const packages = new PackageStore(config.cacheDir, tmpDir, refs, log, {
    ...(deps.downloadIdleTimeoutMs ? { idleTimeoutMs: deps.downloadIdleTimeoutMs } : {}),
    now,
  });

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
      status: worst(dl.status, s.status),
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
    ctx.cache = worst(...statuses);
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
    const cached = await packages.open(p, version, pl);
    if (cached) {
      ctx.cache = "hit";
      const res = serveFile(req, {
        file: cached.file,
        size: cached.size,
        mtime: cached.mtime,
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
    let d = packages.inflight(p, version, pl);
    if (!d) {
      const dl = await metadata.download(p, version, pl);
      const client = metadata.client(p.hostname);
      d = packages.fetch(p, version, pl, {
        client,
        url: new URL(dl.value.doc.download_url, dl.value.url),
        expectedSha256: dl.value.doc.shasum,
        signal: shutdown.signal,
      });
    }
    await d.ready;
    ctx.cache = "miss";
    const headers = new Headers({ "content-type": "application/zip", "x-repoxy-cache": "miss" });
    if (d.expectedSize !== undefined) headers.set("content-length", String(d.expectedSize));
    if (req.method === "HEAD") return new Response(null, { status: 200, headers });
    ctx.reported = true;
    return new Response(trackBody(req, d.reader(), 200, ctx.done), { status: 200, headers });
  }

  async function registryVersions(req: Request, ctx: RequestContext, p: ProviderRef) {
    const got = await metadata.versions(p);
    ctx.cache = got.status;
    return keptJson(req, ctx, got.value.raw, got.status, got.fetchedAt + config.metadataTtlMs);
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
    ctx.cache = worst(entry.status, dl.status, s.status);
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
      JSON.stringify({ "providers.v1": "/v1/providers/" }) + "\n",
      undefined,
      300,
    );
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
    const r = parseRoute(url.pathname, config.defaultUpstream);
    if (!r) throw new NotFoundError(`nothing is served at ${url.pathname}`);
    ctx.route = r.kind;
    if (req.method !== "GET" && req.method !== "HEAD") {
      throw new HttpError(405, `method ${req.method} is not allowed; use GET or HEAD`, {
        allow: "GET, HEAD",
      });
    }
    if ("provider" in r) metadata.client(r.provider.hostname); // 404 for unknown registries, before any work
    switch (r.kind) {
      case "wellKnown":
        return wellKnown(req);
      case "health":
        return health(req);
      case "mirrorIndex":
        return await mirrorIndex(req, ctx, r.provider);
      case "mirrorVersion":
        return await mirrorVersion(req, ctx, r.provider, r.version);
      case "archive":
        return await archive(req, ctx, r.provider, r.version, r);
      case "registryVersions":
        return await registryVersions(req, ctx, r.provider);
      case "registryDownload":
        return await registryDownload(req, ctx, r.provider, r.version, r);
      case "registrySums":
        return await registrySums(req, ctx, r.provider, r.version, r.signature);
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

  async function handle(req: Request): Promise<Response> {
    const started = performance.now();
    const ctx: RequestContext = {
      route: "none",
      cache: undefined,
      path: "",
      generation: refs.generation,
      done: (end) => accessLog(req, ctx.path || new URL(req.url).pathname, ctx, end, started),
    };
    if (req.method === "GET" || req.method === "HEAD") {
      const path = pathOf(req.url);
      const kept = answers.get(path);
      if (kept) {
        ctx.path = path;
        ctx.cache = "hit";
        const res = jsonResponse(req, kept, "hit", kept.maxAge);
        const bytes = req.method === "HEAD" || res.status === 304 ? 0 : kept.length;
        ctx.done({ status: res.status, bytes });
        return res;
      }
    }
    let res: Response;
    try {
      res = await route(req, ctx);
    } catch (e) {
      ctx.reported = false;
      const status = toErrorStatus(e);
      if (status >= 500 && !(e instanceof HttpError)) {
        log.error("internal error", {
          path: new URL(req.url).pathname,
          error: (e as Error)?.stack ?? String(e),
        });
      }
      const message = e instanceof HttpError || e instanceof BadPathError
        ? e.message
        : "internal error; see the server log";
      res = errorResponse(status, message, e instanceof HttpError ? e.headers : {});
    }
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
    packages,
    metadata,
    handle,
    settle: () => packages.settle(),
    async close() {
      shutdown.abort();
      await packages.settle();
    },
  };
}
