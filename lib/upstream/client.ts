/**
 * HTTP client for one upstream registry and the download hosts it names.
 *
 * Only URLs built from the configured upstream base, or URLs the upstream's own
 * documents name, are ever fetched; a client can never make Repoxy fetch an
 * arbitrary URL. The upstream token goes only to the registry's own origin and
 * is dropped on redirects that leave it. Every hop passes the egress policy
 * (`egress.ts`) first; URLs in log lines and error messages are redacted
 * (presigned URLs carry their credential in the query string).
 * @module
 */
import type { Config, UpstreamConfig } from "../config/config.ts";
import { span } from "../base/trace.ts";
import {
  NotFoundError,
  UpstreamAuthError,
  UpstreamError,
  UpstreamTimeoutError,
} from "../http/errors.ts";
import type { Logger } from "../base/log.ts";
import { redactUrl } from "../base/redact.ts";
import { jsonShapeProblem } from "../protocol/json_shape.ts";
import {
  configEgress,
  EgressPolicy,
  EgressRefusedError,
  type EgressRoute,
  isLoopbackHost,
  type Resolver,
} from "./egress.ts";
import { EgressConnections } from "./egress_connections.ts";

/** One upstream HTTP exchange, as reported by the upstream client. */
export interface UpstreamRequestInfo {
  /** The configured upstream the request was made for. */
  hostname: string;
  url: string;
  /** HTTP status, or "error" when no response arrived (connect failure, timeout). */
  status: number | "error";
  /** Time until the response headers (or the failure), in milliseconds. */
  durationMs?: number;
  /** Why no response arrived. */
  error?: string;
  /**
   * Set when the registry itself answered 401/403: Repoxy's credentials for
   * it are the problem ("missing": no `upstreams.<host>.token` configured;
   * "rejected": the configured one was refused).
   */
  credentials?: CredentialsProblem;
}

/** What is wrong with the mirror's credentials for an upstream registry. */
export type CredentialsProblem = "missing" | "rejected";

/** How often the same upstream's refused credentials are logged again while they stay refused. */
const CREDENTIALS_WARN_EVERY_MS = 10 * 60_000;

/** The `fetch` signature Repoxy depends on (injectable for tests). */
export type FetchFn = (input: Request | URL | string, init?: RequestInit) => Promise<Response>;

/** Options shared by every upstream client. */
export interface UpstreamDeps {
  fetch: FetchFn;
  log: Logger;
  userAgent: string;
  /** Per-request deadline for metadata, in ms. */
  timeoutMs: number;
  /** Aborted when the server shuts down. */
  signal?: AbortSignal;
  /** Waits between retries; injectable so tests need not sleep. */
  sleep?: (ms: number) => Promise<void>;
  /** Called for every upstream request (metrics, test counting). */
  onRequest?: (info: UpstreamRequestInfo) => void;
  /** The egress policy; {@link upstreamClients} builds one for all upstreams. */
  egress?: EgressPolicy;
  /** DNS resolver for the egress policy (tests inject one). */
  resolve?: Resolver;
  /** Environment for proxy variables (tests inject one; default `Deno.env`). */
  env?: (name: string) => string | undefined;
  /** Proxy clients shared by all upstreams; {@link upstreamClients} makes one. */
  connections?: EgressConnections;
}

/** A fetched metadata body with the URL it finally came from (after redirects). */
export interface FetchedText {
  text: string;
  url: string;
}

/** Validators of a stored document, sent back to the upstream as conditions (HTTP caching). */
export interface Validators {
  /** The `ETag` it came with: sent as `If-None-Match`. */
  etag?: string;
  /** The `Last-Modified` it came with: sent as `If-Modified-Since`. */
  lastModified?: string;
}

/** The outcome of a conditional GET: unchanged (304), or the new body with its validators. */
export type ConditionalText =
  | { notModified: true; url: string }
  | { notModified: false; text: string; url: string; validators: Validators };

const MAX_REDIRECTS = 10;
/**
 * Default cap of one metadata document (`limits.metadataDocument` overrides
 * it per call): documents are small; a bigger answer is a broken or hostile upstream.
 */
const DEFAULT_MAX_DOCUMENT_BYTES = 8 * 1024 * 1024;

/** Options of a small-document GET. */
export interface DocumentOptions {
  accept?: string;
  auth?: boolean;
  /** Largest body accepted: refused by Content-Length before reading, and while reading. */
  maxBytes?: number;
}

/** Longest ETag or Last-Modified kept (real ones are tens of bytes). */
const MAX_VALIDATOR_LENGTH = 256;

/** One document read: its bytes, or that the upstream confirmed the stored copy (304). */
type FetchedBytes =
  | { notModified: true; url: string }
  | { notModified?: false; body: Uint8Array; url: string; validators: Validators };

/**
 * The validators of a 200 answer worth sending back. A `Last-Modified`
 * less than a second before the answer's `Date` is weak (RFC 9110 §8.8.2.2):
 * the document may change again within that same second and still carry
 * it, so an `If-Modified-Since` would hide the change. It is dropped and the
 * next revalidation is a plain refetch (or uses the ETag).
 */
function validatorsOf(res: Response): Validators {
  const v: Validators = {};
  // Kept beside the document in memory and in refs/: a hostile upstream's
  // huge header is not worth keeping (the next revalidation is a plain GET).
  const etag = res.headers.get("etag");
  if (etag && etag.length <= MAX_VALIDATOR_LENGTH) v.etag = etag;
  const lm = res.headers.get("last-modified");
  if (lm && lm.length <= MAX_VALIDATOR_LENGTH) {
    const modified = Date.parse(lm);
    const date = Date.parse(res.headers.get("date") ?? "");
    if (Number.isFinite(modified) && Number.isFinite(date) && date - modified >= 1000) {
      v.lastModified = lm;
    }
  }
  return v;
}

/**
 * Redacts URLs inside a free text (Deno's errors quote the full URL). The URL
 * being fetched is replaced verbatim first: its query may hold characters
 * such as ")" that end the generic match early.
 */
function redactText(text: string, url?: URL): string {
  const known = url ? text.split(url.href).join(redactUrl(url)) : text;
  return known.replace(/\b[a-z][a-z0-9+.-]*:\/\/[^\s<>"']+/gi, (u) => redactUrl(u));
}

/**
 * Deno's fetch says only "fetch failed"; the reason (refused, DNS, TLS) is in
 * `cause`. Redacted: the text quotes the URL, query string included.
 */
function fetchErrorText(e: unknown, url: URL): string {
  const cause = (e as Error)?.cause;
  if (cause instanceof Error && cause.message) return redactText(cause.message, url);
  return redactText((e as Error)?.message ?? String(e), url);
}

/** `promise`, or the signal's reason when it aborts first (DNS has no signal of its own). */
function abortable<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

/**
 * Resolves a URL an upstream named (a redirect, a document's field) against
 * where it was named. A malformed one is the upstream's fault: an
 * {@link UpstreamError} (502), not an internal error.
 */
export function upstreamUrl(ref: string, base: string | URL, hostname: string, what: string): URL {
  try {
    return new URL(ref, base);
  } catch {
    throw new UpstreamError(`upstream ${hostname} named a malformed ${what}: ${redactUrl(ref)}`);
  }
}

/**
 * Reads a body whole, throwing `tooBig()` as soon as it passes `max` bytes
 * (never buffering more); the upstream transfer is cancelled when reading
 * stops early.
 */
export async function readCapped(
  stream: ReadableStream<Uint8Array> | null,
  max: number,
  tooBig: () => Error,
): Promise<Uint8Array> {
  if (!stream) return new Uint8Array(0);
  const reader = stream.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    while (true) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.length;
      if (total > max) throw tooBig();
      chunks.push(value);
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
  const body = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    body.set(c, at);
    at += c.length;
  }
  return body;
}

const sleepReal = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Client for one configured upstream. */
export class UpstreamClient {
  readonly hostname: string;
  readonly #base: URL;
  /**
   * Origins the registry's token goes to: its own, and those its service
   * discovery names for its APIs (`providers.v1`, `modules.v1`), as
   * Terraform sends a host's credentials to every API URL it discovered
   * there (the latest answer only: a registry changing its discovery cannot
   * grow the list). Never a download host's or a redirect's elsewhere.
   */
  readonly #serviceOrigins = new Map<string, string>();
  readonly #token: string | undefined;
  readonly #egress: EgressPolicy;
  readonly #connections: EgressConnections;
  /** When refused credentials were last logged; reset by the registry's next success. */
  #credentialsWarnedAt: number | undefined;

  constructor(readonly config: UpstreamConfig, readonly deps: UpstreamDeps) {
    this.hostname = config.hostname;
    this.#base = new URL(config.url.endsWith("/") ? config.url : config.url + "/");
    this.#token = config.token;
    this.#egress = deps.egress ??
      new EgressPolicy({ allowPrivateNetworks: false, egressAllow: [] }, {
        exemptOrigins: [this.#base.origin],
        ...(deps.resolve ? { resolve: deps.resolve } : {}),
        ...(deps.env ? { env: deps.env } : {}),
      });
    this.#connections = deps.connections ?? new EgressConnections(deps.signal);
    // Loopback is exempt: a token sent there never leaves the machine.
    if (
      this.#token !== undefined && this.#base.protocol === "http:" && !isLoopbackHost(this.#base)
    ) {
      deps.log.warn("upstream token will be sent over plain http://; use https://", {
        upstream: this.hostname,
        url: redactUrl(this.#base),
      });
    }
  }

  /** The discovery document URL: `{url}/.well-known/terraform.json`. */
  discoveryUrl(): URL {
    return new URL(".well-known/terraform.json", this.#base);
  }

  /**
   * Lets the token go to an API base the registry's service discovery named
   * (see {@link UpstreamClient.#serviceOrigins}); the registry, which holds the
   * token, chose it.
   */
  trustServiceBase(service: string, base: URL): void {
    this.#serviceOrigins.set(service, base.origin);
  }

  /** Whether the registry's token goes to `origin` (see {@link UpstreamClient.#serviceOrigins}). */
  #tokenOrigin(origin: string): boolean {
    if (origin === this.#base.origin) return true;
    for (const o of this.#serviceOrigins.values()) if (o === origin) return true;
    return false;
  }

  /** Whether the token may be sent to this URL (the registry's or its API's origin). */
  #mayAuthorize(url: URL): boolean {
    return this.#token !== undefined && this.#tokenOrigin(url.origin);
  }

  /**
   * GET with manual redirects, so the Authorization header is decided per hop.
   * The caller owns the returned response body.
   */
  async get(
    url: URL,
    opts: {
      accept?: string;
      signal?: AbortSignal;
      auth?: boolean;
      /** Extra request headers (conditions of a revalidation), on every hop. */
      headers?: Record<string, string>;
    } = {},
  ): Promise<{ res: Response; url: URL }> {
    let current = url;
    for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
      if (current.protocol !== "https:" && current.protocol !== "http:") {
        throw new UpstreamError(
          `upstream ${this.hostname} named a non-http URL: ${current.protocol}`,
        );
      }
      const headers = new Headers({
        "user-agent": this.deps.userAgent,
        // Deno's fetch would otherwise decompress while keeping the original
        // length and encoding headers; archives must pass through byte for byte.
        "accept-encoding": "identity",
      });
      if (opts.accept) headers.set("accept", opts.accept);
      for (const [k, v] of Object.entries(opts.headers ?? {})) headers.set(k, v);
      if (opts.auth !== false && this.#mayAuthorize(current)) {
        headers.set("authorization", `Bearer ${this.#token}`);
      }
      let res: Response;
      let route: EgressRoute;
      try {
        // Vetted on every hop, before any connection: a redirect is a new target.
        route = await abortable(this.#egress.route(current), opts.signal);
      } catch (e) {
        if (e instanceof DOMException && (e.name === "TimeoutError" || e.name === "AbortError")) {
          throw new UpstreamTimeoutError(`upstream ${current.host} did not answer in time`);
        }
        if (e instanceof EgressRefusedError) {
          this.deps.log.warn("egress refused", {
            upstream: this.hostname,
            url: redactUrl(current),
            reason: e.reason,
          });
        }
        throw e;
      }
      const started = performance.now();
      const took = () => Math.round((performance.now() - started) * 1000) / 1000;
      const lease = this.#connections.clientFor(route, current);
      const { client } = lease;
      const traceHeaders = span("upstream headers", { path: current.pathname, via: route.via });
      try {
        res = await this.deps.fetch(current, {
          headers,
          redirect: "manual",
          ...(opts.signal ? { signal: opts.signal } : {}),
          ...(client ? { client } : {}),
        });
      } catch (e) {
        this.deps.onRequest?.({
          hostname: this.hostname,
          url: redactUrl(current),
          status: "error",
          durationMs: took(),
          error: fetchErrorText(e, current),
        });
        if (e instanceof DOMException && (e.name === "TimeoutError" || e.name === "AbortError")) {
          throw new UpstreamTimeoutError(`upstream ${current.host} did not answer in time`);
        }
        const err = new UpstreamError(
          `cannot reach upstream ${current.host}: ${fetchErrorText(e, current)}`,
        );
        err.transient = true;
        throw err;
      } finally {
        lease.done();
      }
      traceHeaders({ status: res.status });
      const credentials = this.#credentialsProblem(res.status, current);
      this.deps.onRequest?.({
        hostname: this.hostname,
        url: redactUrl(current),
        status: res.status,
        durationMs: took(),
        ...(credentials ? { credentials } : {}),
      });
      if (credentials) this.#warnCredentials(res.status, credentials);
      else if (res.status < 400 && this.#tokenOrigin(current.origin)) {
        this.#credentialsWarnedAt = undefined;
      }
      if (res.status >= 300 && res.status < 400 && res.headers.has("location")) {
        await res.body?.cancel();
        current = upstreamUrl(res.headers.get("location")!, current, this.hostname, "redirect");
        continue;
      }
      return { res, url: current };
    }
    throw new UpstreamError(`upstream ${this.hostname}: too many redirects`);
  }

  /**
   * Whether a status from `url` says the mirror's credentials for this
   * registry are wrong: only a 401/403 from an origin its token goes to
   * (the registry's, its discovered APIs'). A download host's 403 (an expired presigned
   * URL) says nothing about the token.
   */
  #credentialsProblem(status: number, url: URL): CredentialsProblem | undefined {
    if ((status !== 401 && status !== 403) || !this.#tokenOrigin(url.origin)) return undefined;
    return this.#token === undefined ? "missing" : "rejected";
  }

  /** What to fix, in the words of the config file. */
  #credentialsAdvice(problem: CredentialsProblem): string {
    // Through a central Repoxy (`via`), its token is the one at fault.
    const [key, who] = this.config.via
      ? ["via.token", ` (the central Repoxy ${redactUrl(this.config.via)})`]
      : [`upstreams.${JSON.stringify(this.hostname)}.token`, ""];
    return problem === "missing"
      ? `it${who} requires credentials and ${key} is not set in Repoxy's config`
      : `it${who} rejected the token configured as ${key} in Repoxy's config`;
  }

  /** One clear warning per episode (again every 10 min while it lasts), never one per request. */
  #warnCredentials(status: number, problem: CredentialsProblem): void {
    const now = Date.now();
    if (
      this.#credentialsWarnedAt !== undefined &&
      now - this.#credentialsWarnedAt < CREDENTIALS_WARN_EVERY_MS
    ) return;
    this.#credentialsWarnedAt = now;
    this.deps.log.warn(
      `upstream ${this.hostname} refused Repoxy's credentials (HTTP ${status}): ${
        this.#credentialsAdvice(problem)
      }`,
      {
        upstream: this.hostname,
        status,
        credentials: problem,
        configKey: this.config.via ? "via.token" : `upstreams.${this.hostname}.token`,
      },
    );
  }

  /**
   * The error for a 401/403 the registry gave: the client learns that the
   * mirror's credentials for this registry are at fault, not its own, and
   * not that it should try again later.
   */
  credentialsError(status: number): UpstreamAuthError {
    const problem: CredentialsProblem = this.#token === undefined ? "missing" : "rejected";
    return new UpstreamAuthError(
      `the mirror cannot use upstream registry ${this.hostname}: ${
        this.#credentialsAdvice(problem)
      } (the registry answered HTTP ${status}); ask the mirror's operator to fix it`,
      status,
    );
  }

  /**
   * {@link credentialsError} when a 401/403 came from the registry's own
   * origin (where its token goes); undefined for another host's (a redirect
   * target, a discovered API elsewhere), which says nothing about the token.
   */
  credentialsErrorFor(status: number, url: URL): UpstreamAuthError | undefined {
    return this.#credentialsProblem(status, url) ? this.credentialsError(status) : undefined;
  }

  /**
   * Fetches a small text document (JSON, SHA256SUMS) with a deadline and
   * bounded retries. A 404 becomes {@link NotFoundError}.
   */
  async getText(url: URL, opts: DocumentOptions = {}): Promise<FetchedText> {
    const bytes = await this.getBytes(url, opts);
    return { text: new TextDecoder().decode(bytes.body), url: bytes.url };
  }

  /** Like {@link getText} but returns raw bytes (signatures are binary). */
  async getBytes(url: URL, opts: DocumentOptions = {}): Promise<{ body: Uint8Array; url: string }> {
    const got = await this.#getBytes(url, opts, undefined);
    if (got.notModified) throw new UpstreamError(`upstream ${url.host} answered 304 unasked`);
    return got;
  }

  /**
   * A revalidation: {@link getText} with the stored document's validators as
   * conditions (`If-None-Match`, `If-Modified-Since`). A 304 means the stored
   * copy is still current; with no validators it is a plain refetch. Same
   * deadline, retries and bounds as {@link getText}.
   */
  async getTextConditional(
    url: URL,
    given: Validators,
    opts: DocumentOptions = {},
  ): Promise<ConditionalText> {
    const conditions: Record<string, string> = {};
    if (given.etag) conditions["if-none-match"] = given.etag;
    if (given.lastModified) conditions["if-modified-since"] = given.lastModified;
    const got = await this.#getBytes(url, opts, conditions);
    if (got.notModified) return { notModified: true, url: got.url };
    return {
      notModified: false,
      text: new TextDecoder().decode(got.body),
      url: got.url,
      validators: got.validators,
    };
  }

  async #getBytes(
    url: URL,
    opts: DocumentOptions,
    conditions: Record<string, string> | undefined,
  ): Promise<FetchedBytes> {
    const deadline = Date.now() + this.deps.timeoutMs;
    const sleep = this.deps.sleep ?? sleepReal;
    let attempt = 0;
    while (true) {
      attempt++;
      const remaining = deadline - Date.now();
      try {
        if (remaining <= 0) {
          throw new UpstreamTimeoutError(`upstream ${url.host} did not answer in time`);
        }
        return await this.#getBytesOnce(url, remaining, opts, conditions);
      } catch (e) {
        if (!(e instanceof UpstreamError) || !e.transient) throw e;
        const wait = e.retryAfterMs ?? 200 * 2 ** (attempt - 1);
        // Give up early rather than let the client's own 10 s timeout fire first.
        if (attempt >= 3 || Date.now() + wait >= deadline - 250) throw e;
        this.deps.log.warn("upstream request failed, retrying", {
          upstream: this.hostname,
          url: redactUrl(url),
          attempt,
          error: (e as Error).message,
        });
        await sleep(wait);
      }
    }
  }

  async #getBytesOnce(
    url: URL,
    timeoutMs: number,
    opts: DocumentOptions,
    conditions: Record<string, string> | undefined,
  ): Promise<FetchedBytes> {
    const signals = [AbortSignal.timeout(timeoutMs)];
    if (this.deps.signal) signals.push(this.deps.signal);
    const signal = AbortSignal.any(signals);
    const max = opts.maxBytes ?? DEFAULT_MAX_DOCUMENT_BYTES;
    const { accept, auth } = opts;
    const traceDocument = span("upstream document", { path: url.pathname });
    const { res, url: finalUrl } = await this.get(url, {
      ...(accept !== undefined ? { accept } : {}),
      ...(auth !== undefined ? { auth } : {}),
      ...(conditions ? { headers: conditions } : {}),
      signal,
    });
    // Only an answer to a condition that was sent means "unchanged".
    if (res.status === 304 && conditions && Object.keys(conditions).length > 0) {
      await res.body?.cancel();
      return { notModified: true, url: finalUrl.href };
    }
    if (res.status === 404 || res.status === 410) {
      await res.body?.cancel();
      throw new NotFoundError(`upstream ${this.hostname} has no ${finalUrl.pathname}`);
    }
    if (this.#credentialsProblem(res.status, finalUrl)) {
      await res.body?.cancel();
      throw this.credentialsError(res.status);
    }
    if (res.status !== 200) {
      await res.body?.cancel();
      const err = new UpstreamError(
        `upstream ${finalUrl.host} answered ${res.status} for ${finalUrl.pathname}`,
      );
      if (res.status === 429 || (res.status >= 500 && res.status !== 501)) {
        err.transient = true;
        const ra = Number(res.headers.get("retry-after") ?? "NaN");
        if (Number.isFinite(ra) && ra >= 0) err.retryAfterMs = Math.min(ra * 1000, 5000);
      }
      throw err;
    }
    // Refused before reading a byte when the upstream says how big it is,
    // and while reading when it does not (or lies): never buffered whole.
    const tooBig = (what: string) =>
      new UpstreamError(
        `upstream ${this.hostname} (${finalUrl.host}) sent ${what} for ${finalUrl.pathname}; the limit is ${max} bytes`,
      );
    const len = Number(res.headers.get("content-length") ?? "0");
    if (len > max) {
      await res.body?.cancel();
      throw tooBig(`${len} bytes`);
    }
    try {
      const body = await readCapped(res.body, max, () => tooBig("more than the limit"));
      traceDocument({ bytes: body.length });
      return { body, url: finalUrl.href, validators: validatorsOf(res) };
    } catch (e) {
      if (e instanceof UpstreamError) throw e;
      if (e instanceof DOMException && (e.name === "TimeoutError" || e.name === "AbortError")) {
        throw new UpstreamTimeoutError(`upstream ${finalUrl.host} did not answer in time`);
      }
      throw new UpstreamError(
        `upstream ${finalUrl.host} broke off ${finalUrl.pathname}: ${(e as Error).message}`,
      );
    }
  }

  /** Fetches and parses JSON; malformed JSON is an {@link UpstreamError}. */
  async getJson(
    url: URL,
    opts: { maxBytes?: number } = {},
  ): Promise<{ json: unknown; text: string; url: string }> {
    const { text, url: final } = await this.getText(url, { ...opts, accept: "application/json" });
    // Bounded bytes are not bounded heap: refuse shapes no registry sends.
    const shape = jsonShapeProblem(text);
    if (shape) {
      throw new UpstreamError(
        `upstream ${this.hostname} sent an implausible document for ${
          new URL(final).pathname
        }: ${shape}`,
      );
    }
    try {
      return { json: JSON.parse(text), text, url: final };
    } catch {
      throw new UpstreamError(
        `upstream ${this.hostname} sent malformed JSON for ${new URL(final).pathname}`,
      );
    }
  }
}

/** One client per configured upstream, keyed by hostname; no other registry is ever contacted. */
export function upstreamClients(config: Config, deps: UpstreamDeps): Map<string, UpstreamClient> {
  const egress = deps.egress ?? configEgress(config, deps);
  const connections = deps.connections ?? new EgressConnections(deps.signal);
  const shared = { ...deps, egress, connections };
  return new Map([...config.upstreams].map(([host, up]) => [host, new UpstreamClient(up, shared)]));
}
