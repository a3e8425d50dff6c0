/**
 * What keeps a cache directory healthy while a process serves from it: the
 * inventory and how it follows other processes, the size quota, the disk's
 * health and recovery probe, the background re-hashing, and the single-flight
 * downloads that all of them watch. One start and one close, so the app
 * wiring does not have to know the order these depend on.
 * @module
 */
import type { Logger } from "../base/log.ts";
import { BackgroundVerifier } from "./background_verify.ts";
import type { CacheDir } from "./cache_dir.ts";
import { DiskHealth } from "./disk_health.ts";
import { Downloads, type TransferLimits } from "./download.ts";
import type { CoordinationStore } from "./coordination.ts";
import { FleetLeases, type FleetTuning } from "./fleet_lease.ts";
import { CacheInventory } from "./inventory.ts";
import { QuotaKeeper } from "./quota.ts";
import { PACKAGES_PREFIX } from "./package_store.ts";
import { parsePackedPath } from "../protocol/packed_layout.ts";

/** How long shutdown waits for `h1:` jobs before abandoning them. */
const H1_SHUTDOWN_GRACE_MS = 2_000;

/** Settings and injected dependencies of {@link startUpkeep}. */
export interface UpkeepOptions {
  log: Logger;
  now: () => number;
  /** `maxCacheSize`, in bytes; undefined means no quota. */
  maxCacheBytes?: number | undefined;
  /** Size and rate bounds of archive downloads. */
  limits: TransferLimits;
  /** `backgroundVerify`: bytes per second (0: off) and the pause between passes. */
  backgroundVerify: { bytesPerSecond: number; intervalMs: number };
  /** Idle timeout of archive downloads, in ms. */
  downloadIdleTimeoutMs?: number | undefined;
  /** Waits in the background jobs; tests pass a fast one. */
  backgroundSleep?: ((ms: number, signal: AbortSignal) => Promise<void>) | undefined;
  /** Time between disk recovery probes after a disk failure, in ms. */
  diskProbeIntervalMs?: number | undefined;
  /**
   * Fleet leases on the shared bucket's coordination store; without a store
   * (local disk) there are no leases at all.
   */
  fleet?: (FleetTuning & { store?: CoordinationStore | undefined }) | undefined;
}

/** The running upkeep of one cache directory. */
export interface Upkeep {
  readonly inventory: CacheInventory;
  readonly downloads: Downloads;
  readonly diskHealth: DiskHealth;
  readonly verifier: BackgroundVerifier;
  /** Tells inventory and quota about an archive that reached the disk by other means (a fill from the bucket). */
  stored(key: string, size: number): void;
  /** Another archive (a module's) was stored under `key`: prunes for it under a quota. */
  afterStore(key: string): void;
  /** Waits for downloads, stores and pruning in flight. */
  settle(): Promise<void>;
  /** Stops the background jobs, gives `h1:` jobs a short grace, then abandons them. */
  close(): Promise<void>;
}

/**
 * Scans the cache once, then keeps the inventory, quota and disk health up to
 * date as archives come and go (from this process or another).
 */
export async function startUpkeep(cache: CacheDir, opts: UpkeepOptions): Promise<Upkeep> {
  const { log, now, packages } = { ...opts, packages: cache.packages };
  const sleep = opts.backgroundSleep ? { sleep: opts.backgroundSleep } : {};
  // Walked once here; afterwards every stored archive is added as it comes,
  // and with a quota may evict others.
  const inventory = new CacheInventory(cache.storage);
  await inventory.scan();
  const quota: QuotaKeeper | undefined = opts.maxCacheBytes === undefined
    ? undefined
    : new QuotaKeeper(cache, opts.maxCacheBytes, log, (): number => downloads.reservedBytes);
  const diskHealth = new DiskHealth(cache.storage, log, {
    cacheDir: cache.root,
    ...(opts.diskProbeIntervalMs ? { probeIntervalMs: opts.diskProbeIntervalMs } : {}),
  });
  packages.onStored((p, v, pl, size, key) => {
    inventory.add(p, v, pl, size);
    quota?.afterStore(key);
  });
  packages.onRemoved((p, v, pl) => inventory.remove(p, v, pl));
  const background = new AbortController();
  const watching = inventory.watch({
    marker: () => packages.changeMarker(),
    signal: background.signal,
    now,
    ...sleep,
    onError: (e) => log.warn("cannot rescan the cache", { error: e.message }),
  });
  const verifier = new BackgroundVerifier(cache, {
    ...opts.backgroundVerify,
    log,
    now,
    ...sleep,
  });
  verifier.start();
  const store = opts.fleet?.store;
  const fleet = store ? new FleetLeases({ ...opts.fleet, store }, log) : undefined;
  const downloads: Downloads = new Downloads(packages, log, {
    fleet,
    ...(opts.downloadIdleTimeoutMs ? { idleTimeoutMs: opts.downloadIdleTimeoutMs } : {}),
    now,
    limits: opts.limits,
    health: diskHealth,
    ...(opts.maxCacheBytes === undefined ? {} : { maxCacheBytes: opts.maxCacheBytes }),
    // Prunes only when archives and reservations together pass the quota.
    ...(quota
      ? {
        onReserve: () => {
          if (inventory.totalBytes + downloads.reservedBytes > quota.maxBytes) quota.makeRoom();
        },
      }
      : {}),
  });
  const settle = async () => {
    await downloads.settle();
    await packages.settle();
    await quota?.idle();
  };
  return {
    inventory,
    downloads,
    diskHealth,
    verifier,
    afterStore: (key) => quota?.afterStore(key),
    settle,
    stored(key, size) {
      const a = parsePackedPath(key.slice(PACKAGES_PREFIX.length));
      if (!key.startsWith(PACKAGES_PREFIX) || !a) return;
      inventory.add(a.provider, a.version, a.platform, size);
      quota?.afterStore(key);
    },
    async close() {
      background.abort();
      await verifier.stop();
      await watching;
      await diskHealth.close();
      // h1: jobs get a short grace (what was just stored gets its hash),
      // then are abandoned: a huge or hostile archive must not hold shutdown up.
      let grace: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        packages.settle(),
        new Promise((r) => grace = setTimeout(r, H1_SHUTDOWN_GRACE_MS)),
      ]);
      clearTimeout(grace);
      packages.abortH1Jobs();
    },
  };
}
