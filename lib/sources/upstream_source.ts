/**
 * The online {@link ProviderSource}: answers from the upstream registries
 * through {@link Metadata} (kept in `refs/`, refreshed by its rules) and
 * archives downloaded into the cache, one download per archive.
 *
 * `{version}.json` lists the archives the version's signed SHA256SUMS names
 * (the registry's `platforms` list is only a hint); only when SHA256SUMS
 * names none by the usual file name, or there is none, do the listed
 * platforms' own documents say.
 *
 * What one client request can make it do is bounded: `{version}.json`
 * answers fetch platforms' documents `limits.platformConcurrency` at a time
 * (all answers and searches for SHA256SUMS together), at most 512 of them and
 * `limits.metadataMemory` bytes, lists at most 512 archives, and stops when
 * every client waiting for it has given up; a module download answer is read up to
 * `limits.moduleAnswer` bytes (a module version list up to
 * `limits.metadataDocument`) and abandoned at the client's deadline.
 *
 * Read-ahead: a cold `terraform init` asks one question at a time, and each
 * waits for an upstream round trip. What a client asks next is often
 * certain, so the upstream work for it starts as soon as the question before
 * is answered (see {@link READ_AHEAD_SLOTS}): a version list fetched from the
 * upstream starts the newest release's SHA256SUMS (download document,
 * signature check) — `{version}.json` and the registry's SHA256SUMS need it
 * —, and a registry `download` document starts that archive's download into
 * the cache, which Terraform fetches right after SHA256SUMS. The read-ahead
 * goes through the same verified paths as a client's request (a client
 * asking meanwhile joins it), and one that fails costs the client nothing:
 * its own request does the work again.
 * @module
 */
import type { Logger } from "../base/log.ts";
import { traced, traceNote } from "../base/trace.ts";
import { type CacheStatus, worstStatus } from "../cache/cache_status.ts";
import type { Download, Downloads } from "../cache/download.ts";
import type { PackageStore } from "../cache/package_store.ts";
import { NegativeCache } from "../cache/negative_cache.ts";
import type { Config } from "../config/config.ts";
import { NotFoundError, UpstreamError, UpstreamTimeoutError } from "../http/errors.ts";
import type { MirrorArchive } from "../protocol/mirror_json.ts";
import {
  archiveFilename,
  parseArchiveFilename,
  type PlatformRef,
  platformString,
  type ProviderRef,
  providerString,
} from "../protocol/names.ts";
import type { ModuleRef } from "../protocol/paths.ts";
import type { DownloadValue, SumsValue, VersionsValue } from "../protocol/registry_json.ts";
import type { Metadata } from "../upstream/metadata.ts";
import { readCapped, upstreamUrl } from "../upstream/client.ts";
import { givenUp, type Slots } from "../upstream/slots.ts";
import { newestAllowed } from "../protocol/version_constraints.ts";
import type {
  Answer,
  ArchiveFetch,
  ModuleAnswer,
  ProviderSource,
  VersionArchives,
  VersionList,
} from "./source.ts";

/**
 * Most listed platforms whose own download documents one `{version}.json`
 * fetches (when SHA256SUMS cannot say): real providers list a few dozen at
 * most, and a hostile list of thousands (up to `limits.metadataDocument`)
 * must not cost thousands of requests.
 */
const MAX_LISTED_DOCUMENTS = 512;

/**
 * Most archives one `{version}.json` lists (the listed platforms first): real
 * providers publish a few dozen; a SHA256SUMS naming tens of thousands (its
 * signing key is the upstream's to offer) made a 10 MB answer costing
 * half a second of CPU per request.
 */
const MAX_ARCHIVES = 512;

/** Work shared by every request for one `{version}.json` (single-flight). */
interface SharedWork<T> {
  promise: Promise<T>;
  /** Aborted when the last waiter gave up. */
  abort: AbortController;
  waiters: number;
}

/**
 * Read-aheads in flight at most (an archive's until its download ends); more
 * are skipped, not queued, so a client listing many providers or asking for
 * many download documents adds a bounded amount of upstream work.
 */
export const READ_AHEAD_SLOTS = 4;

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
  readonly #namedBySums = new WeakMap<
    Map<string, string>,
    Array<{ name: string; pl: PlatformRef; zh: string }>
  >();
  readonly #archivesWork = new Map<string, SharedWork<Answer<VersionArchives>>>();
  /**
   * Download documents fetched for platforms SHA256SUMS does not cover,
   * across all `{version}.json` answers and the searches for SHA256SUMS
   * ({@link Metadata.platformSlots}): many hostile versions at once must
   * not multiply what is in flight. (SHA256SUMS normally covers every
   * platform, so honest answers never wait here; the first document each
   * search reads is not counted.)
   */
  readonly #platformSlots: Slots;
  /**
   * Legacy lookups the registry answered 404 (`{host}/{type}` → the body,
   * when small), for `limits.negativeTtl`: made-up types cost one upstream
   * request each per TTL, like unknown providers, not one per client request.
   */
  readonly #legacyMissing: NegativeCache;
  /** Legacy lookups in flight: concurrent identical ones share one upstream request. */
  readonly #legacyFlights = new Map<string, Promise<ModuleAnswer>>();
  /** Read-aheads in flight (see the module doc). */
  readonly #ahead = new Set<Promise<void>>();

  constructor(readonly deps: UpstreamSourceDeps) {
    // Shared with Metadata's search for a version's SHA256SUMS.
    this.#platformSlots = deps.metadata.platformSlots;
    const { negativeTtlMs, negativeEntries } = deps.config.limits;
    this.#legacyMissing = new NegativeCache(negativeTtlMs, negativeEntries);
  }

  async versionList(p: ProviderRef): Promise<Answer<VersionList>> {
    const got = await this.deps.metadata.versions(p);
    this.#readAheadNewest(p, got);
    let list = this.#lists.get(got.value);
    if (!list) {
      list = { versions: got.value.versions.map((v) => v.version) };
      this.#lists.set(got.value, list);
    }
    return { value: list, status: got.status, keepUntil: this.#freshUntil(got.fetchedAt) };
  }

  async versionsDocument(p: ProviderRef): Promise<Answer<string>> {
    const got = await this.deps.metadata.versions(p);
    this.#readAheadNewest(p, got);
    return { value: got.value.raw, status: got.status, keepUntil: this.#freshUntil(got.fetchedAt) };
  }

  /**
   * The archives of a version. Concurrent requests share one computation;
   * it stops (launching no more upstream fetches) once every request that
   * waits for it has given up.
   *
   * @param signal aborted when this caller stops waiting (its deadline, a disconnect)
   */
  async versionArchives(
    p: ProviderRef,
    version: string,
    signal?: AbortSignal,
  ): Promise<Answer<VersionArchives>> {
    if (signal?.aborted) throw givenUp();
    const key = `${providerString(p)}/${version}`;
    let work = this.#archivesWork.get(key);
    if (!work) {
      const abort = new AbortController();
      const w: SharedWork<Answer<VersionArchives>> = {
        promise: this.#versionArchives(p, version, abort.signal),
        abort,
        waiters: 0,
      };
      this.#archivesWork.set(key, w);
      w.promise.finally(() => {
        if (this.#archivesWork.get(key) === w) this.#archivesWork.delete(key);
      }).catch(() => {});
      work = w;
    }
    const w = work;
    w.waiters++;
    let waiting = true;
    const leave = () => {
      if (waiting) w.waiters--;
      waiting = false;
    };
    let onAbort: (() => void) | undefined;
    try {
      if (!signal) return await w.promise;
      return await new Promise<Answer<VersionArchives>>((resolve, reject) => {
        onAbort = () => {
          leave();
          reject(givenUp());
          // Nobody is left to use the result: stop working for it.
          if (w.waiters === 0) {
            w.abort.abort();
            if (this.#archivesWork.get(key) === w) this.#archivesWork.delete(key);
          }
        };
        signal.addEventListener("abort", onAbort, { once: true });
        w.promise.then(resolve, reject);
      });
    } finally {
      leave();
      if (onAbort) signal?.removeEventListener("abort", onAbort);
    }
  }

  async #versionArchives(
    p: ProviderRef,
    version: string,
    signal: AbortSignal,
  ): Promise<Answer<VersionArchives>> {
    const { metadata, packages, config } = this.deps;
    const entry = await metadata.versionEntry(p, version);
    const listed = entry.value.platforms ?? [];
    const statuses: CacheStatus[] = [entry.status];
    // The signed SHA256SUMS says which archives exist; the list is a hint.
    const sums = await this.#sumsFor(p, version, signal);
    statuses.push(sums.status);
    const zhOf = new Map<string, { pl: PlatformRef; zh: string }>();
    const todo: PlatformRef[] = [];
    if (sums.map) {
      for (const a of this.#namedArchives(sums.map, p.type, version)) zhOf.set(a.name, a);
      // A listed platform SHA256SUMS does not name is not there (its
      // download could not be verified): no request for it — unless
      // SHA256SUMS names no archive by the usual file name at all; then each
      // listed platform's document says which line is its archive.
      if (zhOf.size === 0) todo.push(...listed.slice(0, MAX_LISTED_DOCUMENTS));
    } else {
      // No SHA256SUMS: each listed platform's own document gives its hash.
      todo.push(...listed.slice(0, MAX_LISTED_DOCUMENTS));
    }
    // Listed platforms whose hash SHA256SUMS cannot give by the usual file
    // name need their own download document: fetched a few at a time,
    // within a byte budget, and only while someone waits. One that is 404,
    // or whose archive SHA256SUMS does not vouch for, is left out (it could
    // not be downloaded anyway).
    const budget = config.limits.metadataMemoryBytes;
    let fetched = 0;
    let next = 0;
    // One failure ends the answer: the other workers must not go on fetching for it.
    let failed = false;
    const fetchSome = async () => {
      while (next < todo.length && !failed) {
        if (signal.aborted) throw givenUp();
        const pl = todo[next++]!;
        await this.#platformSlots.take(signal);
        let dl;
        try {
          dl = await metadata.download(p, version, pl);
        } catch (e) {
          if (e instanceof NotFoundError) continue;
          throw e;
        } finally {
          this.#platformSlots.give();
        }
        statuses.push(dl.status);
        if (dl.status !== "hit") fetched += dl.value.raw.length;
        if (fetched > budget) {
          throw new UpstreamError(
            `upstream ${p.hostname} sent more than ${budget} bytes of download documents for ${
              providerString(p)
            } ${version}`,
          );
        }
        const zh = dl.value.doc.shasum.toLowerCase();
        if (sums.map && sums.map.get(dl.value.doc.filename) !== zh) continue;
        zhOf.set(platformString(pl), { pl, zh });
      }
    };
    const worker = async () => {
      try {
        await fetchSome();
      } catch (e) {
        failed = true;
        throw e;
      }
    };
    const n = Math.min(config.limits.platformConcurrency, todo.length);
    await Promise.all(Array.from({ length: n }, worker));
    if (zhOf.size === 0 && !sums.map) {
      throw new UpstreamError(
        `upstream ${p.hostname} offers no archive of ${providerString(p)} ${version}: ` +
          `no SHA256SUMS, and no listed platform has a download document`,
      );
    }
    // Listed platforms first, in their order, then the others SHA256SUMS names.
    const order = [...listed.map(platformString), ...zhOf.keys()];
    const archives: MirrorArchive[] = [];
    for (const name of new Set(order)) {
      const got = zhOf.get(name);
      if (!got) continue;
      if (archives.length === MAX_ARCHIVES) {
        this.deps.log.warn("version names too many archives; the rest left out of {version}.json", {
          provider: providerString(p),
          version,
          named: zhOf.size,
          kept: MAX_ARCHIVES,
        });
        break;
      }
      const { pl, zh } = got;
      const hashes: string[] = [];
      const meta = await packages.meta(p, version, pl);
      if (meta?.h1) hashes.push(meta.h1);
      else if (meta) packages.ensureH1(p, version, pl).catch(() => {});
      hashes.push(`zh:${zh}`);
      archives.push({ platform: name, url: archiveFilename(p.type, version, pl), hashes });
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
    signal?: AbortSignal,
  ): Promise<Answer<DownloadValue>> {
    const got = await this.deps.metadata.listedDownload(p, version, pl, signal);
    // Terraform asks for SHA256SUMS, its signature, then this archive.
    this.#readAhead(async () => {
      await this.checksums(p, version);
      if (await this.deps.packages.meta(p, version, pl)) return;
      if (this.deps.downloads.inflight(p, version, pl)) return;
      // A failed disk would make it a pass-through nobody reads.
      if (!this.deps.downloads.opts.health.ok) return;
      // Holds its slot to the end: a client cannot make many run at once
      // by asking for documents alone.
      await (await this.#startDownload(p, version, pl)).done;
    });
    return { value: got.value, status: got.status, keepUntil: Infinity };
  }

  async checksums(
    p: ProviderRef,
    version: string,
    signal?: AbortSignal,
  ): Promise<Answer<SumsValue>> {
    const { metadata } = this.deps;
    // Found through any platform's download document that exists.
    const s = await metadata.versionSums(p, version, signal);
    if (!s.value) {
      throw new NotFoundError(
        `upstream ${p.hostname} names no SHA256SUMS for ${providerString(p)} ${version}`,
      );
    }
    return { value: s.value, status: s.status, keepUntil: Infinity };
  }

  async fetchArchive(p: ProviderRef, version: string, pl: PlatformRef): Promise<ArchiveFetch> {
    const joined = this.deps.downloads.inflight(p, version, pl);
    traceNote("joined", joined !== undefined);
    if (joined) return await archiveFetchOf(joined);
    return await archiveFetchOf(await this.#startDownload(p, version, pl));
  }

  /** Starts (or joins) an archive's verified download into the cache. */
  async #startDownload(p: ProviderRef, version: string, pl: PlatformRef): Promise<Download> {
    const { metadata, downloads } = this.deps;
    // A platform the version does not list fails here, without an upstream request.
    const dl = await metadata.verifiedDownload(p, version, pl);
    const client = metadata.client(p.hostname);
    const url = upstreamUrl(dl.value.doc.download_url, dl.value.url, p.hostname, "download_url");
    // A cache that cannot be written does not fail the download: it turns
    // into a verified pass-through (Downloads, with its DiskHealth).
    return downloads.start(p, version, pl, {
      open: (signal) => client.get(url, { signal, accept: "application/zip, */*" }),
      expectedSha256: dl.value.doc.shasum,
      signal: this.deps.shutdown,
    });
  }

  /**
   * After a version list came from the upstream: the newest release's
   * archives and SHA256SUMS (what Terraform installs unless told otherwise).
   * A list served from the cache starts nothing: its read-ahead ran when it
   * was fetched.
   */
  #readAheadNewest(p: ProviderRef, got: { value: VersionsValue; status: CacheStatus }): void {
    if (got.status !== "miss") return;
    const newest = newestAllowed([], got.value.versions.map((v) => v.version));
    if (newest === undefined) return;
    this.#readAhead(async () => {
      await this.versionArchives(p, newest);
    });
  }

  /**
   * Runs `work` in the background when a read-ahead slot is free. Errors are
   * dropped: the client's own request does the work again and reports them.
   */
  #readAhead(work: () => Promise<void>): void {
    if (this.#ahead.size >= READ_AHEAD_SLOTS || this.deps.shutdown.aborted) return;
    // A span of its own: its upstream requests are not the client's request's.
    const run = traced("read-ahead", {}, work).catch(() => {});
    this.#ahead.add(run);
    run.finally(() => this.#ahead.delete(run));
  }

  /** Waits for the read-aheads in flight (shutdown, tests). */
  async settle(): Promise<void> {
    while (this.#ahead.size > 0) await Promise.allSettled([...this.#ahead]);
  }

  /**
   * Module registry answers are passed through (not cached): a `host` block
   * replaces the whole discovery document, so without `modules.v1` module
   * installs from that registry would break. Relative locations are made
   * absolute against the upstream URL, which the client no longer sees.
   */
  async moduleAnswer(m: ModuleRef, suffix: string, signal?: AbortSignal): Promise<ModuleAnswer> {
    const { metadata, config } = this.deps;
    const base = await metadata.serviceBase(m.hostname, "modules.v1");
    const client = metadata.client(m.hostname);
    const url = new URL(`${m.namespace}/${m.name}/${m.system}/${suffix}`, base);
    // One signal for the headers and the whole body: an answer that never
    // ends is abandoned (and the upstream request aborted) at the deadline.
    const signals = [AbortSignal.timeout(config.upstreamTimeoutMs), this.deps.shutdown];
    if (signal) signals.push(signal);
    const { res, url: final } = await client.get(url, {
      accept: "application/json",
      signal: AbortSignal.any(signals),
    });
    if (res.status !== 200 && res.status !== 204) {
      await res.body?.cancel();
      const refused = client.credentialsErrorFor(res.status, final);
      if (refused) throw refused;
      return { status: res.status, url: final, contentType: "", body: "" };
    }
    // A download answer is a location (limits.moduleAnswer); a version list
    // is a metadata document, and popular modules' lists are big.
    const max = suffix.endsWith("download")
      ? config.limits.moduleAnswerBytes
      : config.limits.metadataDocumentBytes;
    const tooBig = () =>
      new UpstreamError(
        `upstream ${m.hostname} sent a module answer over ${max} bytes for ${final.pathname}`,
      );
    const get = res.headers.get("x-terraform-get");
    const len = Number(res.headers.get("content-length") ?? "0");
    if (len + (get?.length ?? 0) > max) {
      await res.body?.cancel();
      throw tooBig();
    }
    const absolute = (loc: string) =>
      /^(\/|\.\/|\.\.\/)/.test(loc)
        ? upstreamUrl(loc, final, m.hostname, "module location").href
        : loc;
    let body = res.status === 204
      ? (await res.body?.cancel(), "")
      : await readText(res, max - (get?.length ?? 0), tooBig, m.hostname);
    if (body && suffix.endsWith("download")) {
      try {
        const doc = JSON.parse(body);
        if (doc && typeof doc.location === "string") {
          doc.location = absolute(doc.location);
          body = JSON.stringify(doc);
        }
      } catch { /* not JSON: pass through as is */ }
    }
    const answer: ModuleAnswer = {
      status: res.status,
      url: final,
      contentType: res.headers.get("content-type") ?? "application/json",
      body,
    };
    if (get) answer.terraformGet = absolute(get);
    return answer;
  }

  /**
   * The legacy-namespace lookup, passed through: status and body as the
   * registry gave them (Terraform reads `id` / `moved_to` from a 200 and
   * treats anything else as "no suggestion"), bounded like any metadata
   * document. Concurrent identical lookups share one upstream request
   * (bounded by `upstreamTimeout`, whoever stops waiting); a 404 is
   * remembered for `limits.negativeTtl`.
   */
  legacyLookup(hostname: string, type: string, signal?: AbortSignal): Promise<ModuleAnswer> {
    const key = `${hostname}/${type}`;
    const missing = this.#legacyMissing.get(key);
    if (missing !== undefined) {
      const up = this.deps.config.upstreams.get(hostname)?.url ?? `https://${hostname}/`;
      return Promise.resolve({
        status: 404,
        url: new URL(`-/${type}/versions`, up.endsWith("/") ? up : up + "/"),
        contentType: "application/json",
        body: missing,
      });
    }
    let flight = this.#legacyFlights.get(key);
    if (!flight) {
      flight = this.#fetchLegacy(hostname, type).then((a) => {
        // Small 404 bodies are kept as they came; a big one is not worth the memory.
        if (a.status === 404) {
          this.#legacyMissing.add(
            key,
            a.body.length <= 1024 ? a.body : JSON.stringify({ errors: ["Not Found"] }),
          );
        }
        return a;
      }).finally(() => this.#legacyFlights.delete(key));
      this.#legacyFlights.set(key, flight);
    }
    if (!signal) return flight;
    // This waiter may stop waiting; the shared request goes on for the others.
    return new Promise<ModuleAnswer>((resolve, reject) => {
      if (signal.aborted) return reject(signal.reason);
      const onAbort = () => reject(signal.reason);
      signal.addEventListener("abort", onAbort, { once: true });
      flight.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
    });
  }

  async #fetchLegacy(hostname: string, type: string): Promise<ModuleAnswer> {
    const { metadata, config } = this.deps;
    const base = await metadata.serviceBase(hostname, "providers.v1");
    const client = metadata.client(hostname);
    const url = new URL(`-/${type}/versions`, base);
    const { res, url: final } = await client.get(url, {
      accept: "application/json",
      signal: AbortSignal.any([AbortSignal.timeout(config.upstreamTimeoutMs), this.deps.shutdown]),
    });
    const refused = client.credentialsErrorFor(res.status, final);
    if (refused) {
      await res.body?.cancel();
      throw refused;
    }
    const max = config.limits.metadataDocumentBytes;
    const tooBig = () =>
      new UpstreamError(
        `upstream ${hostname} sent a legacy lookup answer over ${max} bytes for ${final.pathname}`,
      );
    if (Number(res.headers.get("content-length") ?? "0") > max) {
      await res.body?.cancel();
      throw tooBig();
    }
    return {
      status: res.status,
      url: final,
      contentType: res.headers.get("content-type") ?? "application/json",
      body: await readText(res, max, tooBig, hostname),
    };
  }

  /**
   * The archives SHA256SUMS names by the usual file name
   * (`terraform-provider-{type}_{version}_{os}_{arch}.zip`), in its order;
   * derived once per parsed SHA256SUMS.
   */
  #namedArchives(
    map: Map<string, string>,
    type: string,
    version: string,
  ): Array<{ name: string; pl: PlatformRef; zh: string }> {
    let named = this.#namedBySums.get(map);
    if (!named) {
      named = [];
      for (const [filename, zh] of map) {
        const got = parseArchiveFilename(type, filename);
        if (!got || got.version !== version) continue;
        const pl = { os: got.os, arch: got.arch };
        named.push({ name: platformString(pl), pl, zh });
      }
      this.#namedBySums.set(map, named);
    }
    return named;
  }

  /**
   * SHA256SUMS of a version as filename → sha256 (found through any download
   * document that exists), or undefined when the upstream names none.
   */
  async #sumsFor(p: ProviderRef, version: string, signal: AbortSignal) {
    const { metadata } = this.deps;
    const s = await metadata.versionSums(p, version, signal);
    return { map: s.value ? metadata.sumsMap(s.value) : undefined, status: s.status };
  }

  #freshUntil(fetchedAt: number): number {
    return fetchedAt + this.deps.config.metadataTtlMs;
  }
}

/** What a client gets from a download once the upstream answered: the cache's, or the bytes passed through. */
async function archiveFetchOf(download: Download): Promise<ArchiveFetch> {
  await download.ready;
  // Not going to the cache (disk failed, over the quota): say so.
  if (download.passThrough !== undefined) {
    return { kind: "bypass", body: download.reader(), size: download.expectedSize };
  }
  return { kind: "download", download };
}

/**
 * Reads a small body as text, refusing it past `max` bytes while reading
 * (never buffering more) and turning an abort (deadline, shutdown) into a 504.
 */
async function readText(
  res: Response,
  max: number,
  tooBig: () => Error,
  hostname: string,
): Promise<string> {
  try {
    return new TextDecoder().decode(await readCapped(res.body, max, tooBig));
  } catch (e) {
    if (e instanceof UpstreamError) throw e;
    if (e instanceof DOMException && (e.name === "TimeoutError" || e.name === "AbortError")) {
      throw new UpstreamTimeoutError(`upstream ${hostname} did not finish its answer in time`);
    }
    throw new UpstreamError(`upstream ${hostname} broke off its answer: ${(e as Error).message}`);
  }
}
