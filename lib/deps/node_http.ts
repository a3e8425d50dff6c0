/**
 * `node:http` and `node:https` requests, for uploads of a streamed body with
 * its length: Deno's `fetch` sends a `ReadableStream` body chunked and drops
 * `Content-Length`, which S3 refuses (411). Used by the S3 storage only.
 * @module
 */
export { type IncomingMessage, request as httpRequest } from "node:http";
export { request as httpsRequest } from "node:https";
