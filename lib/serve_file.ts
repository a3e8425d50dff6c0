/**
 * Serving a cached archive from an already-open file handle.
 * @module
 */

/** What a cached file response needs. */
export interface FileToServe {
  file: Deno.FsFile;
  size: number;
  mtime: Date | null;
  /** Lowercase hex sha256 of the whole file: the strong ETag. */
  sha256: string;
  contentType: string;
}

/**
 * Builds the response for a cached archive. Takes ownership of `file`: it is
 * closed when the body ends, is cancelled, or is not needed (HEAD).
 */
export function serveFile(req: Request, f: FileToServe, extraHeaders: HeadersInit = {}): Response {
  const headers = new Headers(extraHeaders);
  headers.set("content-type", f.contentType);
  headers.set("content-length", String(f.size));
  headers.set("etag", `"${f.sha256}"`);
  headers.set("accept-ranges", "none");
  headers.set("cache-control", "public, max-age=31536000, immutable");
  if (f.mtime) headers.set("last-modified", f.mtime.toUTCString());
  if (req.method === "HEAD") {
    f.file.close();
    return new Response(null, { status: 200, headers });
  }
  return new Response(f.file.readable, { status: 200, headers });
}
