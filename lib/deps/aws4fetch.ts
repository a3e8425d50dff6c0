/**
 * aws4fetch: AWS Signature Version 4 for S3 requests (64 KB, no
 * dependencies). Chosen over `@aws-sdk/client-s3` (24 MB of packages, slower
 * start, more memory; see lib/storage_s3/README.md for the figures). Loaded
 * only by the S3 storage, which itself is imported only when
 * `storage.kind` is `s3`.
 * @module
 */
export { AwsClient, AwsV4Signer } from "aws4fetch";
