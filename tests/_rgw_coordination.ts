/**
 * The S3 storage's own {@link CoordinationStore} (`S3Storage.coordination()`)
 * on a bucket of the RGW test cluster, one per simulated replica, for the
 * fleet lease tests against a real store. `crash()` makes every later call
 * fail, as a killed replica's would.
 * @module
 */
import type { CoordinationStore } from "../lib/cache/coordination.ts";
import { fixedCredentials } from "../lib/storage_s3/credentials.ts";
import { S3Client } from "../lib/storage_s3/s3_client.ts";
import { S3Storage } from "../lib/storage_s3/s3_storage.ts";
import type { RgwEndpoint } from "./_rgw.ts";

/** A replica's client of the coordination objects in one bucket. */
export interface RgwCoordination extends CoordinationStore {
  crash(): void;
}

/** The coordination store of `bucket` (keys under `prefix`), as a replica sees it. */
export function rgwCoordination(rgw: RgwEndpoint, bucket: string, prefix = ""): RgwCoordination {
  const client = new S3Client({
    endpoint: rgw.endpoint,
    bucket,
    region: rgw.region,
    pathStyle: true,
    credentials: fixedCredentials({
      accessKeyId: rgw.accessKeyId,
      secretAccessKey: rgw.secretAccessKey,
    }),
    timeoutMs: 10_000,
  });
  const store = new S3Storage(client, {
    prefix,
    tempPath: () => {
      throw new Error("no temp files here");
    },
    multipartThresholdBytes: 64 * 2 ** 20,
    partSizeBytes: 16 * 2 ** 20,
  }).coordination();
  let crashed = false;
  const alive = () => {
    if (crashed) throw new Error("this replica is dead");
  };
  return {
    crash: () => crashed = true,
    create: (k, b) => Promise.resolve().then(alive).then(() => store.create(k, b)),
    replace: (k, b, e) => Promise.resolve().then(alive).then(() => store.replace(k, b, e)),
    read: (k) => Promise.resolve().then(alive).then(() => store.read(k)),
    remove: (k, e) => Promise.resolve().then(alive).then(() => store.remove(k, e)),
  };
}
