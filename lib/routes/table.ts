/**
 * The route table: every route Repoxy serves, by the kind `parseRoute` gives
 * it, with its handler and whether it streams (streams get no deadline).
 * @module
 */
import { archive, mirrorIndex, mirrorVersion } from "./mirror.ts";
import { health, metrics, ready, status } from "./operator.ts";
import type { RouteTable } from "./pipeline.ts";
import { moduleArchive, moduleDownload, moduleVersions } from "./modules.ts";
import {
  hostWellKnown,
  registryDownload,
  registryLegacyLookup,
  registrySums,
  registryVersions,
  wellKnown,
} from "./registry.ts";

/** Every route Repoxy serves, by the kind `parseRoute` gives it. */
export const ROUTES: RouteTable = {
  // Network mirror protocol (archives are the registry protocol's downloads too).
  mirrorIndex: { handler: mirrorIndex },
  mirrorVersion: { handler: mirrorVersion },
  archive: { handler: archive, streams: true },
  // Provider and module registry protocol.
  wellKnown: { handler: wellKnown },
  hostWellKnown: { handler: hostWellKnown },
  registryVersions: { handler: registryVersions },
  registryLegacyLookup: { handler: registryLegacyLookup },
  registryDownload: { handler: registryDownload },
  registrySums: { handler: registrySums },
  moduleVersions: { handler: moduleVersions },
  moduleDownload: { handler: moduleDownload },
  // Fetching a module's source may take longer than a metadata answer's deadline.
  moduleArchive: { handler: moduleArchive, streams: true },
  // Operators.
  health: { handler: health },
  ready: { handler: ready },
  metrics: { handler: metrics },
  status: { handler: status },
};
