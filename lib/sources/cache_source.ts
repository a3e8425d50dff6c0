/**
 * The offline {@link ProviderSource}: answers from the cache alone, never
 * contacting an upstream. It offers only what can then be served: the
 * versions and platforms whose archives are stored (read from the disk every
 * time, so what `repoxy import` brings while the server runs shows up at
 * once), the registry documents kept in `refs/` narrowed to those (the
 * version list read from the disk every time too, and a document found
 * missing looked for again, for the same reason), and nothing for modules.
 *
 * Offering a version or platform that then cannot be downloaded would abort
 * the client; leaving it out lets the client try its next source.
 * @module
 */
import type { CacheDir } from "../cache/cache_dir.ts";
import { cachedArchivesByVersion } from "../cache/local_index.ts";
import { entryBytes, refKeys } from "../cache/refs_store.ts";
import { NotFoundError } from "../http/errors.ts";
import {
  archiveFilename,
  compareVersions,
  type PlatformRef,
  platformString,
  type ProviderRef,
  providerString,
  unknownModuleMessage,
  unknownProviderMessage,
} from "../protocol/names.ts";
import type { Route } from "../protocol/paths.ts";
import {
  type DownloadValue,
  filterVersionsDoc,
  parseDownload,
  type SumsValue,
} from "../protocol/registry_json.ts";
import type {
  Answer,
  ArchiveFetch,
  ModuleAnswer,
  ProviderSource,
  VersionArchives,
  VersionList,
} from "./source.ts";

function offline(what: string): NotFoundError {
  return new NotFoundError(offlineMessage(what));
}

function offlineMessage(what: string): string {
  return `${what} is not cached and this mirror is offline`;
}

/**
 * What this source answers on route `r` for a provider it holds nothing of
 * (the messages thrown below, route by route). Client auth answers a provider
 * a token may not see with the same words, so hidden and absent look alike.
 */
export function offlineUnknownMessage(r: Route): string | undefined {
  switch (r.kind) {
    case "mirrorIndex":
      return unknownProviderMessage(r.provider, true);
    case "mirrorVersion":
      return offlineMessage(`${providerString(r.provider)} ${r.version}`);
    case "archive":
      return offlineMessage(archiveFilename(r.provider.type, r.version, r));
    case "registryVersions":
      return offlineMessage(`provider ${providerString(r.provider)}`);
    case "registryDownload":
      return offlineMessage(`${providerString(r.provider)} ${r.version} for ${platformString(r)}`);
    case "registrySums":
      return offlineMessage(`SHA256SUMS of ${providerString(r.provider)} ${r.version}`);
    case "moduleVersions":
    case "moduleDownload":
      return unknownModuleMessage(r.module, true);
    default:
      return undefined;
  }
}

function hit<T>(value: T, keepUntil: number): Answer<T> {
  return { value, status: "hit", keepUntil };
}

/** Answers from the cache alone (`offline: true`). */
export class CacheSource implements ProviderSource {
  constructor(readonly cache: CacheDir) {}

  async versionList(p: ProviderRef): Promise<Answer<VersionList>> {
    const byVersion = await this.#stored(p);
    const versions = [...byVersion.keys()].sort((a, b) => compareVersions(b, a));
    // Not kept: another process may import more at any time.
    return hit({ versions }, 0);
  }

  async versionsDocument(p: ProviderRef): Promise<Answer<string>> {
    // Reloaded: an import (another process) may have added versions to it.
    const entry = await this.cache.refs.reload(refKeys.versions(p));
    if (!entry) throw offline(`provider ${providerString(p)}`);
    const byVersion = await this.#stored(p);
    const { doc, versions } = filterVersionsDoc(
      entry.body,
      (v) => byVersion.get(v)?.map((a) => a.platform),
    );
    if (versions === 0) throw this.#nothing(p);
    return hit(doc, 0);
  }

  async versionArchives(p: ProviderRef, version: string): Promise<Answer<VersionArchives>> {
    const local = (await cachedArchivesByVersion(this.cache, p)).get(version);
    if (!local || local.length === 0) throw offline(`${providerString(p)} ${version}`);
    const { packages } = this.cache;
    for (const a of local) {
      if (!a.meta.h1) packages.ensureH1(p, version, a.platform).catch(() => {});
    }
    const archives = local.map((a) => ({
      platform: platformString(a.platform),
      url: a.filename,
      hashes: [...(a.meta.h1 ? [a.meta.h1] : []), `zh:${a.meta.sha256}`],
    }));
    return hit({ archives, memoKey: {} }, 0);
  }

  async downloadDocument(
    p: ProviderRef,
    version: string,
    pl: PlatformRef,
  ): Promise<Answer<DownloadValue>> {
    const entry = await this.#ref(refKeys.download(p, version, pl));
    if (!entry) throw offline(`${providerString(p)} ${version} for ${platformString(pl)}`);
    // Stored only after it parsed, so it parses.
    const value = { doc: parseDownload(entry.body, pl), raw: entry.body, url: entry.url };
    return hit(value, Infinity);
  }

  async checksums(p: ProviderRef, version: string): Promise<Answer<SumsValue>> {
    const sums = await this.#ref(refKeys.sums(p, version));
    if (!sums) throw offline(`SHA256SUMS of ${providerString(p)} ${version}`);
    const sig = await this.#ref(refKeys.signature(p, version));
    const value = { sums: entryBytes(sums), signature: sig ? entryBytes(sig) : undefined };
    return hit(value, Infinity);
  }

  fetchArchive(p: ProviderRef, version: string, pl: PlatformRef): Promise<ArchiveFetch> {
    return Promise.reject(offline(archiveFilename(p.type, version, pl)));
  }

  moduleAnswer(): Promise<ModuleAnswer> {
    return Promise.reject(
      new NotFoundError("module registry answers are not cached and this mirror is offline"),
    );
  }

  legacyLookup(): Promise<ModuleAnswer> {
    return Promise.reject(
      new NotFoundError("legacy provider lookups are not cached and this mirror is offline"),
    );
  }

  /**
   * An immutable document: from memory when held, else from the disk again
   * (memory may remember it as missing from before an import).
   */
  async #ref(key: string) {
    return (await this.cache.refs.get(key)) ?? await this.cache.refs.reload(key);
  }

  async #stored(p: ProviderRef) {
    const byVersion = await cachedArchivesByVersion(this.cache, p);
    if (byVersion.size === 0) throw this.#nothing(p);
    return byVersion;
  }

  #nothing(p: ProviderRef): NotFoundError {
    return new NotFoundError(unknownProviderMessage(p, true));
  }
}
