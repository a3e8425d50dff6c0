/**
 * The module service as an app wires it: one store on the cache's storage,
 * one egress policy built like the upstream clients' (the same exempt
 * origins, resolver and proxy environment), upstream answers from the
 * source. Kept here so `app.ts` stays a list of parts.
 * @module
 */
import type { Logger } from "../base/log.ts";
import type { RefsStore } from "../cache/refs_store.ts";
import type { Storage } from "../cache/storage.ts";
import type { Config } from "../config/config.ts";
import type { ModuleRef } from "../protocol/paths.ts";
import type { UpstreamClient } from "../upstream/client.ts";
import { configEgress, type Resolver } from "../upstream/egress.ts";
import { ModuleService, type UpstreamModuleAnswer } from "./module_service.ts";
import { ModuleStore } from "./module_store.ts";
import { registerModuleMetrics } from "./module_metrics.ts";
import type { Registry } from "../ops/metrics.ts";

/** What {@link createModuleService} needs from the app. */
export interface ModuleWiring {
  storage: Storage;
  refs: RefsStore;
  log: Logger;
  now: () => number;
  shutdown: AbortSignal;
  clients: Map<string, UpstreamClient>;
  answer?: (m: ModuleRef, suffix: string, signal?: AbortSignal) => Promise<UpstreamModuleAnswer>;
  resolve?: Resolver | undefined;
  env?: ((name: string) => string | undefined) | undefined;
  /** Called with the storage key of each archive stored (the quota prunes for it). */
  onStored?: (key: string) => void;
  /** The app's metrics registry: the module series are added to it. */
  metrics?: Registry;
}

/** Builds the module service of an app, with what the store holds already read. */
export async function createModuleService(
  config: Config,
  w: ModuleWiring,
): Promise<ModuleService> {
  const egress = configEgress(config, w);
  const client = (hostname: string) => {
    const c = w.clients.get(hostname);
    if (!c) throw new Error(`registry ${hostname} is not configured on this mirror`);
    return c;
  };
  const service = new ModuleService({
    config,
    refs: w.refs,
    store: new ModuleStore(w.storage),
    log: w.log,
    now: w.now,
    shutdown: w.shutdown,
    egress,
    client,
    ...(w.answer ? { answer: w.answer } : {}),
    ...(w.onStored ? { onStored: w.onStored } : {}),
  });
  await service.rescan().catch((e) => {
    w.log.warn("cannot read the stored modules", { error: (e as Error).message });
  });
  if (w.metrics) registerModuleMetrics(w.metrics, service);
  return service;
}
