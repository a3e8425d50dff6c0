/**
 * The module cache's series on the app's metrics registry: stored versions
 * and bytes, fetches, passed-through sources, failures, refusals and moved
 * tags, and whether the git CLI is there.
 * @module
 */
import { Gauge, type Registry } from "../ops/metrics.ts";
import type { ModuleService } from "./module_service.ts";

/** Registers the module series (read at scrape time). */
export function registerModuleMetrics(r: Registry, modules: ModuleService): void {
  r.register(
    new Gauge("repoxy_modules_cached", "Module versions stored", [], (g) => {
      g.set({}, modules.stored().length);
    }),
  );
  r.register(
    new Gauge("repoxy_modules_size_bytes", "Total size of the stored module archives", [], (g) => {
      g.set({}, modules.storedBytes);
    }),
  );
  r.register(
    new Gauge(
      "repoxy_module_fetches",
      "Module sources fetched since start, by outcome",
      ["outcome"],
      (g) => {
        const s = modules.stats;
        g.set({ outcome: "stored" }, s.fetched);
        g.set({ outcome: "passed_through" }, s.passedThrough);
        g.set({ outcome: "failed" }, s.failed);
        g.set({ outcome: "refused" }, s.refused);
      },
    ),
  );
  r.register(
    new Gauge(
      "repoxy_modules_moved_tags",
      "Stored git module versions whose upstream tag now names another commit",
      [],
      (g) => g.set({}, modules.moved.size),
    ),
  );
  r.register(
    new Gauge(
      "repoxy_git_available",
      "Whether the git CLI (needed to cache git-sourced modules) was found at start",
      [],
      (g) => g.set({}, modules.gitStatus().startsWith("git version") ? 1 : 0),
    ),
  );
}
