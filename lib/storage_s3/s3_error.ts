/**
 * The error of a bucket request, apart from the client so the body readers
 * the client uses can throw it too.
 * @module
 */

/** The bucket answered with an error status, or could not be reached. */
export class S3Error extends Error {
  override name = "S3Error";
  /**
   * @param status the HTTP status, 0 when the bucket could not be reached
   * @param code S3's error code (`NoSuchKey`, `PreconditionFailed`, …)
   */
  constructor(message: string, readonly status: number, readonly code?: string) {
    super(message);
  }
}
