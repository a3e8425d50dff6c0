/**
 * An object in the bucket opened for reading ({@link OpenObject}): its size
 * and ETag come from one HEAD; bytes are read by ranged GETs pinned to that
 * ETag (`If-Match`), opened lazily at the read position, so a seek costs
 * nothing until the next read and a replaced object fails the read instead
 * of mixing two versions.
 * @module
 */
import type { OpenObject } from "../cache/storage.ts";
import { S3Error } from "./s3_client.ts";
import type { S3Client } from "./s3_client.ts";

/** What a HEAD told about an object. */
export interface S3Head {
  size: number;
  /** The ETag without quotes. */
  etag: string;
  lastModified: Date | null;
  /** `x-amz-meta-sha256`, the sha256 Repoxy recorded at upload. */
  sha256: string | undefined;
}

/** Reads a HEAD answer's facts. */
export function headOf(h: Headers): S3Head {
  const lm = h.get("last-modified");
  const d = lm ? new Date(lm) : null;
  return {
    size: Number(h.get("content-length") ?? "0"),
    etag: unquote(h.get("etag") ?? ""),
    lastModified: d && !Number.isNaN(d.getTime()) ? d : null,
    sha256: h.get("x-amz-meta-sha256") ?? undefined,
  };
}

/** The {@link S3Object.identity} of the object a HEAD described. */
export function identityOf(head: S3Head): string {
  return `s3:${head.etag}:${head.size}`;
}

/** An ETag without its quotes (RGW wants it so in If-Match). */
export function unquote(etag: string): string {
  return etag.replace(/^W\//, "").replace(/^"(.*)"$/, "$1");
}

/** An object of the bucket, read by ranged GETs. */
export class S3Object implements OpenObject {
  readonly size: number;
  readonly mtime: Date | null;
  readonly atime: Date | null = null;
  /** The ETag: equal identities are the same stored bytes. */
  readonly identity: string;
  #pos = 0;
  #reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  /** Bytes of the current response not yet handed out. */
  #left: Uint8Array | undefined;
  #closed = false;

  constructor(
    readonly key: string,
    readonly head: S3Head,
    readonly client: S3Client,
    /** The key as the bucket knows it (with the prefix). */
    readonly bucketKey: string,
  ) {
    this.size = head.size;
    this.mtime = head.lastModified;
    this.identity = identityOf(head);
  }

  async read(buf: Uint8Array): Promise<number | null> {
    if (this.#closed) throw new Error(`${this.key} is closed`);
    if (this.#pos >= this.size) return null;
    if (!this.#left || this.#left.length === 0) {
      if (!this.#reader) await this.#openAt(this.#pos);
      const { done, value } = await this.#next(this.#reader!);
      if (done || !value) {
        throw new S3Error(
          `${this.client.where(this.bucketKey)} ended at ${this.#pos} of ${this.size} bytes`,
          0,
        );
      }
      this.#left = value;
    }
    const n = Math.min(buf.length, this.#left.length);
    buf.set(this.#left.subarray(0, n));
    this.#left = this.#left.subarray(n);
    this.#pos += n;
    return n;
  }

  /**
   * The next chunk, or an {@link S3Error} when the bucket sends nothing for
   * the client's timeout: a body stalled mid-stream must not hold the
   * client's transfer (and this object) open forever.
   */
  async #next(
    reader: ReadableStreamDefaultReader<Uint8Array>,
  ): Promise<ReadableStreamReadResult<Uint8Array>> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const stalled = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        reject(
          new S3Error(
            `${
              this.client.where(this.bucketKey)
            } sent nothing for ${this.client.timeoutMs} ms at ${this.#pos} of ${this.size} bytes`,
            0,
          ),
        );
        // After the rejection: cancelling ends the pending read, which must not win the race.
        this.#drop();
      }, this.client.timeoutMs);
    });
    try {
      return await Promise.race([reader.read(), stalled]);
    } catch (e) {
      if (e instanceof S3Error) throw e;
      throw new S3Error(`GET ${this.client.where(this.bucketKey)}: ${(e as Error).message}`, 0);
    } finally {
      clearTimeout(timer);
    }
  }

  async #openAt(pos: number): Promise<void> {
    const res = await this.client.send("GET", this.bucketKey, {
      headers: { range: `bytes=${pos}-${this.size - 1}`, "if-match": this.head.etag },
    });
    if (res.status !== 206 && !(res.status === 200 && pos === 0)) {
      const text = await res.text().catch(() => "");
      throw this.client.error("GET", this.bucketKey, { status: res.status, text });
    }
    this.#reader = res.body!.getReader();
  }

  #drop(): void {
    this.#left = undefined;
    const r = this.#reader;
    this.#reader = undefined;
    r?.cancel().catch(() => {});
  }

  seek(offset: number, whence: Deno.SeekMode): Promise<number> {
    const base = whence === Deno.SeekMode.Start
      ? 0
      : whence === Deno.SeekMode.Current
      ? this.#pos
      : this.size;
    const to = base + offset;
    if (to < 0) return Promise.reject(new RangeError(`seek before the start of ${this.key}`));
    if (to !== this.#pos) {
      this.#drop();
      this.#pos = to;
    }
    return Promise.resolve(to);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#drop();
  }

  /** Nothing to mark: the bucket keeps no access times and evicts nothing. */
  markServing(): Promise<void> {
    return Promise.resolve();
  }
}
