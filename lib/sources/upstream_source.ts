/**
 * The online {@link ProviderSource}: answers from the upstream registries
 * through {@link Metadata} (kept in `refs/`, refreshed by its rules) and
 * archives downloaded into the cache, one download per archive.
 * @module
 */
import type { Logger } from "../base/log.ts";
import { type CacheStatus, worstStatus } from "../cache/cache_status.ts";
import type { Downloads } from "../cache/download.ts";
import type { PackageStore } from "../cache/package_store.ts";
import { DiskError } from "../cache/storage.ts";
import type { Config } from "../config/config.ts";
import { NotFoundError, UpstreamError } from "../http/errors.ts";
import { verifyingStream } from "../integrity/verifying_stream.ts";
import type { MirrorArchive } from "../protocol/mirror_json.ts";
import {
  archiveFilename,
  type PlatformRef,
  platformString,
  type ProviderRef,
  providerString,
} from "../protocol/names.ts";
import type { ModuleRef } from "../protocol/paths.ts";
import type { DownloadValue, SumsValue, VersionsValue } from "../protocol/registry_json.ts";
import { parseSha256Sums } from "../protocol/sha256sums.ts";
import type { Metadata } from "../upstream/metadata.ts";
import type {
  Answer,
  ArchiveFetch,
  ModuleAnswer,
  ProviderSource,
  VersionArchives,
  VersionList,
} from "./source.ts";

/** Module answers are small; a bigger one is a broken or hostile upstream. */
const MAX_MODULE_ANSWER_BYTES = 1024 * 1024;

/** What the upstream source is built from. */
export interface UpstreamSourceDeps {
  config: Config;
  metadata: Metadata;
  packages: PackageStore;
  downloads: Downloads;
  log: Logger;
  /** Aborted at shutdown: downloads in flight stop and clean up. */
  shutdown: AbortSignal;
}

/** Answers from the upstream registries. */
export class UpstreamSource implements ProviderSource {
  /** Derived forms keyed by the memoised values Metadata returns, so they go with them. */
  readonly #lists = new WeakMap<VersionsValue, VersionList>();
  readonly #parsedSums = new WeakMap<Uint8Array, Map<string, string>>();

  constructor(readonly deps: UpstreamSourceDeps) {}

  async versionList(p: ProviderRef): Promise<Answer<VersionList>> {
    const got = await this.deps.metadata.versions(p);
    let list = this.#lists.get(got.value);
    if (!list) {
      list = { versions: got.value.versions.map((v) => v.version) };
      this.#lists.set(got.value, list);
    }
    return { value: list, status: got.status, keepUntil: this.#freshUntil(got.fetchedAt) };
  }

  async versionsDocument(p: ProviderRef): Promise<Answer<string>> {
    const got = await this.deps.metadata.versions(p);
    return { value: got.value.raw, status: got.status, keepUntil: this.#freshUntil(got.fetchedAt) };
  }

  async versionArchives(p: ProviderRef, version: string): Promise<Answer<VersionArchives>> {
    const { metadata, packages } = this.deps;
    const entry = await metadata.versionEntry(p, version);
    const platforms = entry.value.platforms ?? [];
    if (platforms.length === 0) {
      throw new UpstreamError(
        `upstream ${p.hostname} lists ${p.namespace}/${p.type} ${version} with no platforms`,
      );
    }
    const statuses: CacheStatus[] = [entry.status];
    const sums = await this.#sumsFor(p, version, platforms[0]!);
    statuses.push(sums.status);
    const archives: MirrorArchive[] = [];
    for (const pl of platforms) {
      const filename = archiveFilename(p.type, version, pl);
      let zh = sums.map?.get(filename);
      if (!zh) {
        const dl = await metadata.download(p, version, pl);
        statuses.push(dl.status);
        zh = dl.value.doc.shasum.toLowerCase();
      }
      const hashes: string[] = [];
      const meta = await packages.meta(p, version, pl);
      if (meta?.h1) hashes.push(meta.h1);
      else if (meta) packages.ensureH1(p, version, pl).catch(() => {});
      hashes.push(`zh:${zh}`);
      archives.push({ platform: platformString(pl), url: filename, hashes });
    }
    return {
      value: { archives, memoKey: entry.value },
      status: worstStatus(...statuses),
      keepUntil: this.#freshUntil(entry.fetchedAt),
    };
  }

  async downloadDocument(
    p: ProviderRef,
    version: string,
    pl: PlatformRef,
  ): Promise<Answer<DownloadValue>> {
    const got = await this.deps.metadata.download(p, version, pl);
    return { value: got.value, status: got.status, keepUntil: Infinity };
  }

  async checksums(p: ProviderRef, version: string): Promise<Answer<SumsValue>> {
    const { metadata } = this.deps;
    const entry = await metadata.versionEntry(p, version);
    const pl = entry.value.platforms?.[0];
    if (!pl) throw new NotFoundError(`${providerString(p)} ${version} lists no platforms`);
    const dl = await metadata.download(p, version, pl);
    const s = await metadata.sums(p, version, dl.value);
    return {
      value: s.value,
      status: worstStatus(entry.status, dl.status, s.status),
      keepUntil: Infinity,
    };
  }

  async fetchArchive(p: ProviderRef, version: string, pl: PlatformRef): Promise<ArchiveFetch> {
    const { metadata, downloads, log } = this.deps;
    const joined = downloads.inflight(p, version, pl);
    if (joined) {
      await joined.ready;
      if (joined.passThrough !== undefined) {
        return { kind: "bypass", body: joined.reader(), size: joined.expectedSize };
      }
      return { kind: "download", download: joined };
    }
    const dl = await metadata.verifiedDownload(p, version, pl);
    const client = metadata.client(p.hostname);
    const url = new URL(dl.value.doc.download_url, dl.value.url);
    const download = downloads.start(p, version, pl, {
      open: (signal) => client.get(url, { signal, accept: "application/zip, */*" }),
      expectedSha256: dl.value.doc.shasum,
      signal: this.deps.shutdown,
    });
    try {
      await download.ready;
    } catch (e) {
      if (!(e instanceof DiskError)) throw e;
      log.error("cache not writable; streaming the archive without caching it", {
        path: `/${providerString(p)}/${archiveFilename(p.type, version, pl)}`,
        error: e.message,
      });
      return await this.#passThrough(p, dl.value);
    }
    // Not going to the cache (disk failed, over the quota): say so.
    if (download.passThrough !== undefined) {
      return { kind: "bypass", body: download.reader(), size: download.expectedSize };
    }
    return { kind: "download", download };
  }

  /**
   * Module registry answers are passed through (not cached): a `host` block
   * replaces the whole discovery document, so without `modules.v1` module
   * installs from that registry would break. Relative locations are made
   * absolute against the upstream URL, which the client no longer sees.
   */
  async moduleAnswer(m: ModuleRef, suffix: string): Promise<ModuleAnswer> {
    const { metadata, config } = this.deps;
    const base = await metadata.serviceBase(m.hostname, "modules.v1");
    const client = metadata.client(m.hostname);
    const url = new URL(`${m.namespace}/${m.name}/${m.system}/${suffix}`, base);
    const { res, url: final } = await client.get(url, {
      accept: "application/json",
      signal: AbortSignal.timeout(config.upstreamTimeoutMs),
    });
    if (res.status !== 200 && res.status !== 204) {
      await res.body?.cancel();
      return { status: res.status, url: final, contentType: "", body: "" };
    }
    const len = Number(res.headers.get("content-length") ?? "0");
    if (len > MAX_MODULE_ANSWER_BYTES) {
      await res.body?.cancel();
      throw new UpstreamError(`upstream ${m.hostname} sent an oversized module document`);
    }
    const absolute = (loc: string) =>
      /^(\/|\.\/|\.\.\/)/.test(loc) ? new URL(loc, final).href : loc;
    let body = res.status === 204 ? "" : await res.text();
    if (body && suffix.endsWith("download")) {
      try {
        const doc = JSON.parse(body);
        if (doc && typeof doc.location === "string") {
          doc.location = absolute(doc.location);
          body = JSON.stringify(doc);
        }
      } catch { /* not JSON: pass through as is */ }
    }
    const get = res.headers.get("x-terraform-get");
    const answer: ModuleAnswer = {
      status: res.status,
      url: final,
      contentType: res.headers.get("content-type") ?? "application/json",
      body,
    };
    if (get) answer.terraformGet = absolute(get);
    return answer;
  }

  /** Streams an archive from upstream to the client, verified, without caching it. */
  async #passThrough(p: ProviderRef, dl: DownloadValue): Promise<ArchiveFetch> {
    const client = this.deps.metadata.client(p.hostname);
    const { res, url } = await client.get(new URL(dl.doc.download_url, dl.url), {
      signal: this.deps.shutdown,
    });
    if (res.status !== 200 || !res.body) {
      await res.body?.cancel();
      throw new UpstreamError(
        `download host ${url.host} answered ${res.status} for ${url.pathname}`,
      );
    }
    const len = res.headers.get("content-length");
    return {
      kind: "bypass",
      body: verifyingStream(
        res.body,
        dl.doc.shasum,
        (e) => new UpstreamError(`archive ${e.message}`),
      ),
      size: len && /^\d+$/.test(len) ? Number(len) : undefined,
    };
  }

  /** SHA256SUMS of a version as filename → sha256, or undefined when unavailable. */
  async #sumsFor(p: ProviderRef, version: string, pl: PlatformRef) {
    const { metadata } = this.deps;
    const dl = await metadata.download(p, version, pl);
    if (!dl.value.doc.shasums_url) return { map: undefined, status: dl.status };
    const s = await metadata.sums(p, version, dl.value);
    let map = this.#parsedSums.get(s.value.sums);
    if (!map) {
      map = parseSha256Sums(new TextDecoder().decode(s.value.sums));
      this.#parsedSums.set(s.value.sums, map);
    }
    return { map, status: worstStatus(dl.status, s.status) };
  }

  #freshUntil(fetchedAt: number): number {
    return fetchedAt + this.deps.config.metadataTtlMs;
  }
}
