/**
 * The storage's figures on `/-/metrics` and the status page: which storage
 * the replica runs on, whether the shared bucket answers (and since when),
 * what this replica's local tier did with it, and the fleet lease outcomes.
 * Read at scrape time from counters the tier and the leases keep anyway, so
 * the serving path pays nothing for them.
 * @module
 */
import type { FleetStats } from "../cache/fleet_lease.ts";
import type { BucketFigures } from "../cache/storage.ts";
import { formatValue, Gauge, type Labels, type Registry } from "./metrics.ts";

/** One replica's view of the shared bucket (see lib/storage_s3/mod.ts `figures()`). */
export type StorageFigures = BucketFigures;

/** Where the storage figures are read from. */
export interface StorageMetricSources {
  /** Undefined on the local disk alone. */
  bucket?: (() => StorageFigures) | undefined;
  /** The fleet lease counters, when leases run. */
  fleet?: FleetStats | undefined;
}

/** A counter whose series are read at scrape time from counts kept elsewhere. */
class ReadCounter {
  readonly type = "counter";
  constructor(
    readonly name: string,
    readonly help: string,
    readonly read: () => Array<[Labels, number]>,
  ) {}

  samples(out: string[]): void {
    for (const [labels, v] of this.read()) {
      const l = Object.entries(labels).map(([k, x]) => `${k}="${x}"`).join(",");
      out.push(`${this.name}${l ? `{${l}}` : ""} ${formatValue(v)}`);
    }
  }
}

/** The `outcome` label values of `repoxy_fleet_leases_total`, from {@link FleetStats}. */
export const LEASE_OUTCOMES: Record<keyof FleetStats, string> = {
  created: "created",
  takenOver: "taken_over",
  waitedForCommit: "waited_for_commit",
  unleased: "unleased",
  renewFailures: "renew_failed",
};

/** Registers the storage metrics (kind always; the bucket's and the leases' when present). */
export function registerStorageMetrics(r: Registry, src: StorageMetricSources): void {
  const bucket = src.bucket;
  r.register(
    new Gauge(
      "repoxy_storage_info",
      'Where refs and packages live (kind "disk" or "s3"), and this replica\'s id (the value is always 1)',
      ["kind", "replica"],
      (g) => {
        const f = bucket?.();
        g.set({ kind: f ? "s3" : "disk", replica: f?.replicaId ?? "" }, 1);
      },
    ),
  );
  if (bucket) {
    r.register(
      new Gauge(
        "repoxy_storage_bucket_up",
        "Whether the shared bucket answered this replica's last request (1) or not (0)",
        [],
        (g) => g.set({}, bucket().reachable ? 1 : 0),
      ),
    );
    r.register(
      new Gauge(
        "repoxy_storage_bucket_state_since_seconds",
        "Unix time since which repoxy_storage_bucket_up has had its current value",
        [],
        (g) => g.set({}, Math.floor(bucket().since / 1000)),
      ),
    );
    const counter = (name: string, help: string, read: (f: StorageFigures) => number) =>
      r.register(new ReadCounter(name, help, () => [[{}, read(bucket())]]));
    counter(
      "repoxy_storage_bucket_errors_total",
      "Bucket requests of this replica that failed (no answer, or an unexpected status)",
      (f) => f.errors,
    );
    counter(
      "repoxy_storage_fills_total",
      "Archives this replica copied from the bucket into its local tier",
      (f) => f.tier.fills,
    );
    counter(
      "repoxy_storage_fill_bytes_total",
      "Bytes of the archives copied from the bucket into the local tier",
      (f) => f.tier.fillBytes,
    );
    counter(
      "repoxy_storage_uploads_total",
      "Verified archives this replica uploaded to the bucket",
      (f) => f.tier.uploads,
    );
    counter(
      "repoxy_storage_upload_bytes_total",
      "Bytes of the verified archives this replica uploaded to the bucket",
      (f) => f.tier.uploadBytes,
    );
    counter(
      "repoxy_storage_upload_failures_total",
      "Archives kept on the local tier only because the bucket did not take them",
      (f) => f.tier.uploadFailures,
    );
  }
  const fleet = src.fleet;
  if (fleet) {
    r.register(
      new ReadCounter(
        "repoxy_fleet_leases_total",
        "Fleet lease outcomes of this replica: created (it fetched), taken_over (from a dead holder), waited_for_commit (served another replica's fetch), unleased (fetched without a lease: waited too long or bucket unreachable), renew_failed",
        () =>
          (Object.keys(LEASE_OUTCOMES) as Array<keyof FleetStats>).map((k) => [
            { outcome: LEASE_OUTCOMES[k] },
            fleet[k],
          ]),
      ),
    );
  }
}
