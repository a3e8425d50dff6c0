/**
 * {@link Storage} in a bucket on S3-compatible object storage. Keys are the
 * cache directory's layout under the configured prefix
 * (`<prefix>/refs/…`, `<prefix>/packages/{host}/{ns}/{type}/…zip`), so a
 * bucket synced to a folder (`aws s3 sync`) is a valid mirror folder.
 *
 * **Nothing unverified is visible.** {@link S3Storage.commit} uploads a local
 * temp file that was already verified, signed with the sha256 the caller
 * verified (`x-amz-content-sha256`): the server refuses the PUT if a single
 * byte differs. Large archives go in parts, each signed with its own hash,
 * and the upload is completed only after the whole file hashed to the
 * expected sha256; until then the parts are invisible, and a failed upload is
 * aborted (a start-up sweep aborts those a crash left: {@link sweepUploads}).
 * Archives are written with `If-None-Match: *`: an archive another replica
 * stored first is kept when it carries the same sha256.
 * @module
 */
import type { CoordinationStore } from "../cache/coordination.ts";
import type { ObjectInfo, OpenObject, Storage } from "../cache/storage.ts";
import { checkKey, SMALL_OBJECT_MAX_BYTES } from "../cache/storage.ts";
import { createHash } from "../deps/crypto.ts";
import { escapeXml, type S3Client, S3Error, xmlBlocks, xmlValue } from "./s3_client.ts";
import { headOf, type S3Head, S3Object, unquote } from "./s3_object.ts";
import { readSmallBody } from "./small_body.ts";

/** How an {@link S3Storage} uploads and where its temp files go. */
export interface S3StorageOptions {
  /** Key prefix without slashes at either end ("" for none). */
  prefix: string;
  /** A fresh local temp file path (for {@link S3Storage.tempPath}). */
  tempPath: (hint: string) => string;
  multipartThresholdBytes: number;
  partSizeBytes: number;
}

/** Storage in one bucket (under a prefix). */
export class S3Storage implements Storage {
  constructor(readonly client: S3Client, readonly opts: S3StorageOptions) {}

  /** The bucket key of a storage key. */
  bucketKey(key: string): string {
    checkKey(key);
    return this.opts.prefix ? `${this.opts.prefix}/${key}` : key;
  }

  locate(key: string): string {
    return this.client.where(this.bucketKey(key));
  }

  /** `s3://bucket/prefix/`, for messages. */
  where(): string {
    return this.client.where(this.opts.prefix ? `${this.opts.prefix}/` : "");
  }

  /** Absent (404) is undefined; any other failure throws an {@link S3Error}. */
  async get(key: string, maxBytes = SMALL_OBJECT_MAX_BYTES): Promise<Uint8Array | undefined> {
    const k = this.bucketKey(key);
    const res = await this.client.send("GET", k);
    if (res.status === 404) {
      await res.body?.cancel();
      return undefined;
    }
    if (res.status !== 200) {
      throw this.client.error("GET", k, { status: res.status, text: await res.text() });
    }
    return await readSmallBody(res, maxBytes, this.client.timeoutMs, this.client.where(k));
  }

  async put(key: string, data: Uint8Array | string): Promise<void> {
    const k = this.bucketKey(key);
    const a = await this.client.call("PUT", k, { body: data });
    if (a.status !== 200) throw this.client.error("PUT", k, a);
  }

  /** HEAD of a key, undefined when absent. */
  async head(key: string): Promise<S3Head | undefined> {
    const k = this.bucketKey(key);
    const a = await this.client.call("HEAD", k);
    if (a.status === 404) return undefined;
    if (a.status !== 200) throw this.client.error("HEAD", k, a);
    return headOf(a.headers);
  }

  async open(key: string): Promise<OpenObject | undefined> {
    const head = await this.head(key);
    return head ? new S3Object(key, head, this.client, this.bucketKey(key)) : undefined;
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    const h = await this.head(key);
    return h ? { key, size: h.size, mtime: h.lastModified, atime: null } : undefined;
  }

  async *list(prefix: string): AsyncGenerator<ObjectInfo> {
    const base = this.opts.prefix ? `${this.opts.prefix}/` : "";
    const seen = new Set<string>();
    let token: string | undefined;
    // Bounded like the sweep: a store that always answers "truncated" (with the same token, or
    // a new one forever) must not keep verify or prune listing without end.
    for (let page = 0; page < LIST_MAX_PAGES; page++) {
      const query: Record<string, string> = { "list-type": "2", prefix: base + prefix };
      if (token) query["continuation-token"] = token;
      const a = await this.client.call("GET", "", { query });
      if (a.status !== 200) throw this.client.error("LIST", base + prefix, a);
      for (const c of xmlBlocks(a.text, "Contents")) {
        const k = xmlValue(c, "Key");
        // Only what was asked for: a key outside the prefix would name another object.
        if (k === undefined || !k.startsWith(base + prefix)) continue;
        const lm = xmlValue(c, "LastModified");
        yield {
          key: k.slice(base.length),
          size: Number(xmlValue(c, "Size") ?? "0"),
          mtime: lm ? new Date(lm) : null,
          atime: null,
        };
      }
      token = xmlValue(a.text, "IsTruncated") === "true"
        ? xmlValue(a.text, "NextContinuationToken")
        : undefined;
      if (!token) return;
      if (seen.has(token)) {
        throw new S3Error(`listing ${base + prefix} does not move on (token repeated)`, 200);
      }
      seen.add(token);
    }
    throw new S3Error(`listing ${base + prefix} has more than ${LIST_MAX_PAGES} pages`, 200);
  }

  tempPath(hint: string): string {
    return this.opts.tempPath(hint);
  }

  /**
   * Uploads the verified temp file as `key`, then removes it. With `sha256`
   * (the hash the caller verified), the bucket stores exactly those bytes or
   * nothing.
   */
  async commit(tempPath: string, key: string, sha256?: string): Promise<void> {
    await this.upload(tempPath, key, sha256);
    await Deno.remove(tempPath).catch(() => {});
  }

  /**
   * Uploads a local file as `key` (the file is left in place). Archives
   * (`packages/`) are created with `If-None-Match: *`; one already there with
   * the same sha256 is kept, one with another is replaced.
   */
  async upload(path: string, key: string, sha256?: string): Promise<void> {
    using file = await Deno.open(path, { read: true });
    await this.uploadFile(file, key, sha256);
  }

  /**
   * {@link upload} from an open file (which may have been renamed or removed
   * meanwhile). `replace`: the object there was found bad, so its
   * `x-amz-meta-sha256` (which whoever planted it chose) is no reason to keep it.
   */
  async uploadFile(
    file: Deno.FsFile,
    key: string,
    sha256?: string,
    replace = false,
  ): Promise<void> {
    const size = (await file.stat()).size;
    const k = this.bucketKey(key);
    if (size > this.opts.multipartThresholdBytes) {
      // A multipart complete cannot be conditional everywhere: look first, so
      // an archive another replica stored is not sent again.
      if (sha256 && key.startsWith("packages/") && !replace) {
        const there = await this.head(key);
        if (there?.sha256 === sha256.toLowerCase() && there.size === size) return;
      }
      return await this.#multipart(file, size, k, sha256);
    }
    const hash = sha256 ?? await hashRegion(file, 0, size);
    const once = key.startsWith("packages/") && !replace;
    const headers: Record<string, string> = { "x-amz-meta-sha256": hash };
    let a = await this.client.putFile(k, file, 0, size, hash, {
      headers: once ? { ...headers, "if-none-match": "*" } : headers,
    });
    if (a.status === 412 && once) {
      const there = await this.head(key);
      if (there?.sha256 === hash && there.size === size) return;
      a = await this.client.putFile(k, file, 0, size, hash, { headers });
    }
    if (a.status !== 200) throw this.client.error("PUT", k, a);
  }

  async #multipart(file: Deno.FsFile, size: number, k: string, sha256?: string): Promise<void> {
    const meta: Record<string, string> = sha256 ? { "x-amz-meta-sha256": sha256 } : {};
    const init = await this.client.call("POST", k, { query: { uploads: "" }, headers: meta });
    const uploadId = xmlValue(init.text, "UploadId");
    if (init.status !== 200 || !uploadId) throw this.client.error("POST ?uploads", k, init);
    try {
      const whole = createHash("sha256");
      const parts: string[] = [];
      const partSize = this.opts.partSizeBytes;
      for (let off = 0; off < size; off += partSize) {
        const n = parts.length + 1;
        const len = Math.min(partSize, size - off);
        const partHash = await hashRegion(file, off, len, whole);
        const a = await this.client.putFile(k, file, off, len, partHash, {
          query: { partNumber: String(n), uploadId },
        });
        if (a.status !== 200) throw this.client.error(`PUT part ${n}`, k, a);
        parts.push(unquote(a.headers.get("etag") ?? ""));
      }
      const got = whole.digest("hex");
      // Completed only once the whole file hashed to what was verified.
      if (sha256 && got !== sha256.toLowerCase()) {
        throw new S3Error(
          `${
            this.client.where(k)
          }: the file hashed to ${got} while uploading, not the verified ${sha256}; upload aborted`,
          0,
        );
      }
      const body = `<CompleteMultipartUpload>${
        parts.map((e, i) =>
          `<Part><PartNumber>${i + 1}</PartNumber><ETag>"${escapeXml(e)}"</ETag></Part>`
        ).join("")
      }</CompleteMultipartUpload>`;
      const done = await this.client.call("POST", k, { query: { uploadId }, body });
      // S3 may answer 200 with an error document after a long complete.
      if (done.status !== 200 || /<Error>/.test(done.text)) {
        throw this.client.error("POST ?uploadId", k, done);
      }
    } catch (e) {
      await this.client.call("DELETE", k, { query: { uploadId } }).catch(() => {});
      throw e;
    }
  }

  async delete(key: string): Promise<boolean> {
    const k = this.bucketKey(key);
    const there = await this.head(key);
    const a = await this.client.call("DELETE", k);
    if (a.status !== 204 && a.status !== 200 && a.status !== 404) {
      throw this.client.error("DELETE", k, a);
    }
    return there !== undefined;
  }

  /** Copies `from` to `to` inside the bucket (server side: no bytes through this process). */
  async copy(from: string, to: string): Promise<void> {
    const src = this.bucketKey(from).split("/").map(encodeURIComponent).join("/");
    const k = this.bucketKey(to);
    const a = await this.client.call("PUT", k, {
      headers: { "x-amz-copy-source": `/${encodeURIComponent(this.client.opts.bucket)}/${src}` },
    });
    // A copy may fail after a 200 (the error is in the body).
    if (a.status !== 200 || /<Error>/.test(a.text)) throw this.client.error("COPY", k, a);
  }

  /** The bucket's own clock (the `Date` of a HEAD of the bucket): replica clocks are not trusted. */
  async serverNow(): Promise<number> {
    const a = await this.client.call("HEAD", "");
    if (a.status !== 200) throw this.client.error("HEAD", "", a);
    const d = Date.parse(a.headers.get("date") ?? "");
    return Number.isFinite(d) ? d : Date.now();
  }

  /** A presigned GET of `key`, valid for `seconds`. */
  presign(key: string, seconds: number): Promise<string> {
    return this.client.presignGet(this.bucketKey(key), seconds);
  }

  /**
   * Aborts multipart uploads under the prefix started more than `olderThanMs`
   * ago (a replica that died mid-upload); returns how many.
   */
  async sweepUploads(olderThanMs: number, now = Date.now()): Promise<number> {
    const base = this.opts.prefix ? `${this.opts.prefix}/` : "";
    let n = 0;
    // Every page: a listing holds at most 1000 uploads, and a fleet that
    // crashed often (or someone hostile) may have left many more.
    let marker: Record<string, string> = {};
    for (let page = 0; page < SWEEP_MAX_PAGES; page++) {
      const a = await this.client.call("GET", "", {
        query: { uploads: "", prefix: base, ...marker },
      });
      if (a.status !== 200) throw this.client.error("GET ?uploads", base, a);
      for (const u of xmlBlocks(a.text, "Upload")) {
        const key = xmlValue(u, "Key");
        const id = xmlValue(u, "UploadId");
        const at = Date.parse(xmlValue(u, "Initiated") ?? "");
        if (!key || !id || !(now - at > olderThanMs)) continue;
        const d = await this.client.call("DELETE", key, { query: { uploadId: id } });
        if (d.status === 204 || d.status === 200 || d.status === 404) n++;
      }
      const nextKey = xmlValue(a.text, "NextKeyMarker");
      const nextId = xmlValue(a.text, "NextUploadIdMarker");
      if (xmlValue(a.text, "IsTruncated") !== "true" || !nextKey) break;
      const next: Record<string, string> = { "key-marker": nextKey };
      if (nextId) next["upload-id-marker"] = nextId;
      // A listing that does not move on would loop forever.
      if (
        next["key-marker"] === marker["key-marker"] &&
        next["upload-id-marker"] === marker["upload-id-marker"]
      ) break;
      marker = next;
    }
    return n;
  }

  /** Whether the bucket answers (HEAD bucket); throws an {@link S3Error} saying why not. */
  async ping(): Promise<void> {
    const a = await this.client.call("HEAD", "");
    if (a.status !== 200) throw this.client.error("HEAD", "", a);
  }

  /** The conditional primitives on this bucket, keys under the prefix. */
  coordination(): CoordinationStore {
    return new S3Coordination(this);
  }
}

/** sha256 of `len` bytes of `file` from `off` (also fed to `also`), read in 1 MiB chunks. */
async function hashRegion(
  file: Deno.FsFile,
  off: number,
  len: number,
  also?: ReturnType<typeof createHash>,
): Promise<string> {
  const h = createHash("sha256");
  await file.seek(off, Deno.SeekMode.Start);
  const buf = new Uint8Array(Math.min(len, 1 << 20) || 1);
  let left = len;
  while (left > 0) {
    const n = await file.read(buf.subarray(0, Math.min(left, buf.length)));
    if (n === null) throw new Error(`the file ended ${left} bytes early`);
    h.update(buf.subarray(0, n));
    also?.update(buf.subarray(0, n));
    left -= n;
  }
  return h.digest("hex");
}

/** Pages of abandoned uploads one sweep walks at most (1000 uploads a page). */
const SWEEP_MAX_PAGES = 1000;
/** Pages of 1000 keys a listing may have: 10 million objects under one prefix. */
const LIST_MAX_PAGES = 10_000;

/** A lease is a line of JSON; anything larger was not written by a replica. */
const LEASE_MAX_BYTES = 64 * 1024;

function validDate(text: string | null): Date | undefined {
  const d = text ? new Date(text) : undefined;
  return d && !Number.isNaN(d.getTime()) ? d : undefined;
}

/** {@link CoordinationStore} on a bucket: conditional PUT, GET, DELETE. */
class S3Coordination implements CoordinationStore {
  constructor(readonly s: S3Storage) {}

  async #put(key: string, body: Uint8Array, cond: Record<string, string>) {
    const k = this.s.bucketKey(key);
    const a = await this.s.client.call("PUT", k, { body, headers: cond });
    if (a.status === 412) return undefined;
    if (a.status !== 200) throw this.s.client.error("PUT", k, a);
    return { etag: unquote(a.headers.get("etag") ?? "") };
  }

  async create(key: string, body: Uint8Array): Promise<{ etag: string } | "exists"> {
    return (await this.#put(key, body, { "if-none-match": "*" })) ?? "exists";
  }

  async replace(
    key: string,
    body: Uint8Array,
    etag: string,
  ): Promise<{ etag: string } | "changed"> {
    // RGW compares If-Match with the ETag without its quotes.
    return (await this.#put(key, body, { "if-match": unquote(etag) })) ?? "changed";
  }

  async read(key: string) {
    const k = this.s.bucketKey(key);
    const res = await this.s.client.send("GET", k);
    if (res.status === 404) {
      await res.body?.cancel();
      return undefined;
    }
    // Bounded: whoever can write the bucket can write a lease of any size;
    // one larger than any lease reads as an unreadable body (its times
    // still judge whether it is stale).
    const where = this.s.client.where(k);
    const body = await readSmallBody(res, LEASE_MAX_BYTES, this.s.client.timeoutMs, where) ??
      new Uint8Array();
    if (res.status !== 200) {
      throw this.s.client.error("GET", k, {
        status: res.status,
        text: new TextDecoder().decode(body),
      });
    }
    // A Date the client cannot read counts as missing (this replica's
    // clock); a Last-Modified it cannot read as just written: garbage must
    // not make a lease look stale (NaN compares false either way).
    const now = new Date();
    const date = validDate(res.headers.get("date")) ?? now;
    return {
      body,
      etag: unquote(res.headers.get("etag") ?? ""),
      lastModified: validDate(res.headers.get("last-modified")) ?? date,
      serverNow: date,
    };
  }

  async remove(key: string, etag?: string): Promise<void> {
    const k = this.s.bucketKey(key);
    const a = await this.s.client.call("DELETE", k, {
      headers: etag ? { "if-match": unquote(etag) } : {},
    });
    if (a.status !== 204 && a.status !== 200 && a.status !== 404 && a.status !== 412) {
      throw this.s.client.error("DELETE", k, a);
    }
  }
}
