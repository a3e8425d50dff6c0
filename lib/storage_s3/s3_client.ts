/**
 * A small S3 client: SigV4 signing (aws4fetch), small requests through
 * `fetch`, and uploads of a local file region with its length and its
 * `x-amz-content-sha256` through `node:http(s)` (see lib/deps/node_http.ts
 * for why). Every payload is signed with its real hash: RGW and AWS check it,
 * so a byte changed on the way is refused rather than stored.
 * @module
 */
import { AwsV4Signer } from "../deps/aws4fetch.ts";
import { createHash } from "../deps/crypto.ts";
import { httpRequest, httpsRequest, type IncomingMessage } from "../deps/node_http.ts";
import { S3Error } from "./s3_error.ts";
import { readSmallBody } from "./small_body.ts";

export { S3Error };

/** Credentials of one signing identity. */
export interface S3Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
  /** When they stop working (ms since epoch), for temporary credentials. */
  expiresAt?: number;
}

/** Where the current credentials come from (a fixed pair, or the AWS chain). */
export type CredentialSource = () => Promise<S3Credentials>;

/** How to reach one bucket. */
export interface S3ClientOptions {
  /** `https://s3.eu-west-1.amazonaws.com`, `http://127.0.0.1:7480`, … */
  endpoint: string;
  bucket: string;
  region: string;
  /** `endpoint/bucket/key` (true) or `bucket.endpoint/key` (virtual-hosted). */
  pathStyle: boolean;
  credentials: CredentialSource;
  /** Timeout of one request without a body to stream, in ms. */
  timeoutMs?: number;
  fetch?: typeof fetch;
}

/**
 * Most bytes of an answer read whole (XML listings, errors, empty answers): a
 * full ListObjectsV2 page of 1,000 keys of 1,024 bytes stays well under it.
 */
export const ANSWER_MAX_BYTES = 8 * 2 ** 20;

/** sha256 of the empty payload. */
export const EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/** Hex sha256 of a small payload. */
export function sha256Hex(data: Uint8Array | string): string {
  return createHash("sha256").update(data).digest("hex");
}

/** The first `<Tag>value</Tag>` in an XML answer, unescaped. */
export function xmlValue(xml: string, tag: string): string | undefined {
  const m = new RegExp(`<${tag}>([^<]*)</${tag}>`).exec(xml);
  return m ? unescapeXml(m[1]!) : undefined;
}

/** Every `<Tag>…</Tag>` block in an XML answer. */
export function xmlBlocks(xml: string, tag: string): string[] {
  return [...xml.matchAll(new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`, "g"))].map((m) => m[1]!);
}

function unescapeXml(s: string): string {
  return s.replaceAll("&lt;", "<").replaceAll("&gt;", ">").replaceAll("&quot;", '"')
    .replaceAll("&apos;", "'").replaceAll("&amp;", "&");
}

/** Escapes text for an XML body. */
export function escapeXml(s: string): string {
  return s.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");
}

/** A finished request with a small body read whole. */
export interface S3Answer {
  status: number;
  headers: Headers;
  text: string;
}

/** Options of one request. */
export interface S3RequestInit {
  query?: Record<string, string>;
  headers?: Record<string, string>;
  body?: Uint8Array | string;
  signal?: AbortSignal;
}

/** Signs and sends S3 requests for one bucket. */
export class S3Client {
  readonly #fetch: typeof fetch;
  readonly timeoutMs: number;

  constructor(readonly opts: S3ClientOptions) {
    this.#fetch = opts.fetch ?? ((i, init) => fetch(i, init));
    this.timeoutMs = opts.timeoutMs ?? 10_000;
  }

  /** The current credentials; none to be had makes the bucket unusable (an {@link S3Error}). */
  async #credentials(): Promise<S3Credentials> {
    try {
      return await this.opts.credentials();
    } catch (e) {
      throw new S3Error(`s3://${this.opts.bucket}: ${(e as Error).message}`, 0);
    }
  }

  /** The URL of a key (the bucket itself for ""), with a query. */
  url(key: string, query: Record<string, string> = {}): URL {
    const base = new URL(this.opts.endpoint);
    const path = key.split("/").map(encodeURIComponent).join("/");
    const prefix = base.pathname.replace(/\/+$/, "");
    let u: URL;
    if (this.opts.pathStyle) {
      u = new URL(`${base.origin}${prefix}/${encodeURIComponent(this.opts.bucket)}/${path}`);
    } else {
      u = new URL(`${base.protocol}//${this.opts.bucket}.${base.host}${prefix}/${path}`);
    }
    for (const [k, v] of Object.entries(query)) u.searchParams.set(k, v);
    return u;
  }

  async #sign(
    method: string,
    url: URL,
    headers: Record<string, string>,
    payloadSha256: string,
  ): Promise<{ url: URL; headers: Headers }> {
    const c = await this.#credentials();
    const signer = new AwsV4Signer({
      method,
      url: url.toString(),
      headers: { ...headers, "x-amz-content-sha256": payloadSha256 },
      accessKeyId: c.accessKeyId,
      secretAccessKey: c.secretAccessKey,
      ...(c.sessionToken ? { sessionToken: c.sessionToken } : {}),
      service: "s3",
      region: this.opts.region,
    });
    const signed = await signer.sign();
    return { url: signed.url, headers: signed.headers };
  }

  /**
   * Sends one request and returns the response (body unread; the caller
   * consumes or cancels it). The timeout covers the answer's headers only: a
   * large object may take longer to stream. A network failure becomes an
   * {@link S3Error} with status 0.
   */
  async send(method: string, key: string, init: S3RequestInit = {}): Promise<Response> {
    const timer = new AbortController();
    const t = setTimeout(
      () => timer.abort(new DOMException("timed out", "TimeoutError")),
      this.timeoutMs,
    );
    try {
      return await this.#send(method, key, init, timer.signal);
    } finally {
      clearTimeout(t);
    }
  }

  async #send(
    method: string,
    key: string,
    init: S3RequestInit,
    timeout: AbortSignal,
  ): Promise<Response> {
    const body = init.body;
    const url = this.url(key, init.query);
    const signed = await this.#sign(
      method,
      url,
      init.headers ?? {},
      body === undefined ? EMPTY_SHA256 : sha256Hex(body),
    );
    try {
      return await this.#fetch(signed.url, {
        method,
        headers: signed.headers,
        ...(body !== undefined ? { body: body as BodyInit } : {}),
        signal: init.signal ? AbortSignal.any([init.signal, timeout]) : timeout,
      });
    } catch (e) {
      throw new S3Error(`${method} ${this.where(key)}: ${(e as Error).message}`, 0);
    }
  }

  /**
   * Sends a request whose answer is small (XML, empty) and reads it whole;
   * the timeout covers the body too.
   */
  async call(method: string, key: string, init: S3RequestInit = {}): Promise<S3Answer> {
    const timeout = AbortSignal.timeout(this.timeoutMs);
    const res = await this.send(method, key, {
      ...init,
      signal: init.signal ? AbortSignal.any([init.signal, timeout]) : timeout,
    });
    if (method === "HEAD") {
      await res.body?.cancel().catch(() => {});
      return { status: res.status, headers: res.headers, text: "" };
    }
    // Bounded: a hostile or broken bucket cannot fill the heap within the timeout.
    const where = this.where(key);
    const body = await readSmallBody(res, ANSWER_MAX_BYTES, this.timeoutMs, where, method);
    if (body === undefined) {
      throw new S3Error(`${method} ${where}: answered more than ${ANSWER_MAX_BYTES} bytes`, 0);
    }
    return { status: res.status, headers: res.headers, text: new TextDecoder().decode(body) };
  }

  /** An {@link S3Error} for an answer that was not expected. */
  error(method: string, key: string, a: { status: number; text: string }): S3Error {
    const code = xmlValue(a.text, "Code");
    return new S3Error(
      `${method} ${this.where(key)} answered ${a.status}${code ? ` ${code}` : ""}`,
      a.status,
      code,
    );
  }

  /** `s3://bucket/key`, for messages. */
  where(key: string): string {
    return `s3://${this.opts.bucket}/${key}`;
  }

  /**
   * Uploads `length` bytes of `file` from `offset` (PUT, or one part with
   * `query`), with `Content-Length` and the region's sha256 signed, streaming
   * from the file in 256 KiB chunks. Resolves with the answer whatever its
   * status; rejects with an {@link S3Error} (status 0) when the connection
   * fails or stalls for `timeoutMs`.
   */
  async putFile(
    key: string,
    file: Deno.FsFile,
    offset: number,
    length: number,
    sha256: string,
    opts: { headers?: Record<string, string>; query?: Record<string, string> } = {},
  ): Promise<S3Answer> {
    const url = this.url(key, opts.query);
    const signed = await this.#sign(
      "PUT",
      url,
      { ...opts.headers, "content-length": String(length) },
      sha256,
    );
    const headers: Record<string, string> = {};
    signed.headers.forEach((v, k) => headers[k] = v);
    headers["content-length"] = String(length);
    const send = signed.url.protocol === "https:" ? httpsRequest : httpRequest;
    return await new Promise<S3Answer>((resolve, reject) => {
      let failed = false;
      const fail = (e: Error) => {
        if (failed) return;
        failed = true;
        reject(new S3Error(`PUT ${this.where(key)}: ${e.message}`, 0));
      };
      const req = send(signed.url, { method: "PUT", headers });
      req.setTimeout(this.timeoutMs, () => req.destroy(new Error("timed out")));
      req.on("error", fail);
      req.on("response", (res: IncomingMessage) => {
        const chunks: Uint8Array[] = [];
        let got = 0;
        res.on("data", (c: Uint8Array) => {
          got += c.length;
          if (got <= ANSWER_MAX_BYTES) return void chunks.push(c);
          res.destroy();
          fail(new Error(`answered more than ${ANSWER_MAX_BYTES} bytes`));
        });
        res.on("error", fail);
        res.on("end", () => {
          const h = new Headers();
          for (const [k, v] of Object.entries(res.headers)) {
            if (typeof v === "string") h.set(k, v);
          }
          const text = new TextDecoder().decode(concat(chunks));
          resolve({ status: res.statusCode ?? 0, headers: h, text });
        });
      });
      (async () => {
        await file.seek(offset, Deno.SeekMode.Start);
        let left = length;
        while (left > 0 && !failed) {
          const buf = new Uint8Array(Math.min(left, 256 * 1024));
          const n = await file.read(buf);
          if (n === null) throw new Error(`the file ended ${left} bytes early`);
          left -= n;
          if (!req.write(buf.subarray(0, n))) {
            await new Promise<void>((r) => {
              req.once("drain", r);
              req.once("close", r);
            });
          }
        }
        req.end();
      })().catch((e) => {
        req.destroy(e as Error);
        fail(e as Error);
      });
    });
  }

  /** A presigned GET of `key`, valid for `expiresSeconds`. */
  async presignGet(key: string, expiresSeconds: number): Promise<string> {
    const c = await this.#credentials();
    const url = this.url(key, { "X-Amz-Expires": String(expiresSeconds) });
    const signer = new AwsV4Signer({
      method: "GET",
      url: url.toString(),
      accessKeyId: c.accessKeyId,
      secretAccessKey: c.secretAccessKey,
      ...(c.sessionToken ? { sessionToken: c.sessionToken } : {}),
      service: "s3",
      region: this.opts.region,
      signQuery: true,
    });
    return (await signer.sign()).url.toString();
  }
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}
