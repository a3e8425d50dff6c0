/**
 * Upstream metadata with caching: service discovery, version lists, download
 * documents, SHA256SUMS and signatures, fetched from the upstream registries
 * and kept in `refs/`. One copy of the truth serves both the network mirror
 * and the registry protocol. (Offline, nothing here is used: the cache
 * source answers from what is stored.)
 *
 * Freshness rules: discovery and version lists are refreshed after the TTL;
 * download documents and checksums of a released version never change and are
 * kept for good. When a refresh fails and something is stored, the stored copy
 * is served and marked stale.
 * @module
 */
import type { Config } from "../config/config.ts";
import { NotFoundError, UpstreamError } from "../http/errors.ts";
import type { Logger } from "../base/log.ts";
import {
  type PlatformRef,
  platformString,
  type ProviderRef,
  providerString,
} from "../protocol/names.ts";
import {
  type DownloadDoc,
  type DownloadValue,
  parseDownload,
  parseVersions,
  RegistryDocError,
  type SumsValue,
  type VersionEntry,
  type VersionsValue,
} from "../protocol/registry_json.ts";
import { type Sourced, worstStatus } from "../cache/cache_status.ts";
import {
  entryBytes,
  type RefEntry,
  refKeys,
  type RefsStore,
  toBase64,
} from "../cache/refs_store.ts";
import {
  checkMatchingChecksum,
  checkSumsFormat,
  checkSumsSignature,
  IntegrityError,
  mayBeUnsigned,
} from "../integrity/checks.ts";
import type { UpstreamClient } from "./client.ts";

function noService(hostname: string, service: string): NotFoundError {
  return new NotFoundError(`upstream ${hostname} does not offer ${service}`);
}

/** How long a refresh may take before a stored (expired) copy is served instead. */
const STALE_GRACE_MS = 2_000;
const SLOW = Symbol("slow");

async function raceStale<T>(p: Promise<T>, ms: number): Promise<T | typeof SLOW> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<typeof SLOW>((r) => timer = setTimeout(() => r(SLOW), ms)),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Minimum gap between refreshes forced by a client asking for an unlisted version. */
const FORCED_REFRESH_GAP_MS = 30_000;

/** Parses an upstream document, blaming the upstream for what does not parse. */
function fromUpstream<T>(hostname: string, parse: () => T): T {
  try {
    return parse();
  } catch (e) {
    if (e instanceof RegistryDocError) {
      throw new UpstreamError(`upstream ${hostname} sent ${e.message}`);
    }
    throw e;
  }
}

/**
 * Parses a stored entry once. RefsStore hands out the same entry object until
 * the entry is replaced or evicted, so keying by the object keeps the parsed
 * value exactly as fresh as the entry and lets it go with the entry. Without
 * this a metadata hit re-parsed the whole upstream version list (hundreds of
 * KB for big providers) on every request.
 */
function parsedOnce<T>(memo: WeakMap<RefEntry, T>, entry: RefEntry, parse: () => T): T {
  let v = memo.get(entry);
  if (v === undefined) {
    v = parse();
    memo.set(entry, v);
  }
  return v;
}

/** Metadata access for all upstreams. */
export class Metadata {
  readonly #inflight = new Map<string, Promise<RefEntry>>();
  readonly #lastForced = new Map<string, number>();
  readonly #parsedVersions = new WeakMap<RefEntry, VersionsValue>();
  readonly #parsedDownloads = new WeakMap<RefEntry, DownloadDoc>();
  readonly #parsedBytes = new WeakMap<RefEntry, Uint8Array>();

  constructor(
    readonly config: Config,
    readonly refs: RefsStore,
    readonly clients: Map<string, UpstreamClient>,
    readonly log: Logger,
    readonly now: () => number = Date.now,
  ) {}

  /** Stores an entry; a full or read-only disk must not turn a good upstream answer into an error. */
  async #store(key: string, entry: RefEntry): Promise<void> {
    try {
      await this.refs.put(key, entry);
    } catch (e) {
      this.log.error("cannot write metadata to the cache; serving it uncached", {
        key,
        error: (e as Error).message,
      });
    }
  }

  /** The client for a configured upstream; other hostnames are never contacted. */
  client(hostname: string): UpstreamClient {
    const c = this.clients.get(hostname);
    if (!c) throw new NotFoundError(`registry ${hostname} is not configured on this mirror`);
    return c;
  }

  /**
   * Returns a stored entry, fetching it when missing or older than `ttlMs`.
   * Concurrent callers for one key share one upstream request.
   */
  async #cached(
    key: string,
    ttlMs: number,
    fetcher: () => Promise<RefEntry>,
    opts: { force?: boolean; hostname: string },
  ): Promise<Sourced<RefEntry>> {
    const stored = await this.refs.get(key);
    const fresh = stored && !opts.force && this.now() - stored.fetchedAt < ttlMs;
    if (stored && fresh) return { value: stored, status: "hit", fetchedAt: stored.fetchedAt };
    let p = this.#inflight.get(key);
    if (!p) {
      p = (async () => {
        const entry = await fetcher();
        await this.#store(key, entry);
        return entry;
      })();
      this.#inflight.set(key, p);
      p.finally(() => this.#inflight.delete(key)).catch(() => {});
    }
    try {
      // With a stored copy to fall back on, a slow upstream should not make
      // the client wait: past a short grace period the stale copy is served
      // and the refresh goes on in the background.
      const entry = stored ? await raceStale(p, STALE_GRACE_MS) : await p;
      if (entry === SLOW) {
        this.log.warn("upstream slow; serving stale metadata while refreshing", {
          upstream: opts.hostname,
          key,
        });
        return { value: stored!, status: "stale", fetchedAt: stored!.fetchedAt };
      }
      return { value: entry, status: "miss", fetchedAt: entry.fetchedAt };
    } catch (e) {
      // A definite "not found" upstream is not a reason to serve stale data
      // for a version list, but it is for everything kept for good.
      if (stored && !(e instanceof NotFoundError && ttlMs !== Infinity)) {
        this.log.warn("upstream failed; serving stale metadata", {
          upstream: opts.hostname,
          key,
          error: (e as Error).message,
        });
        return { value: stored, status: "stale", fetchedAt: stored.fetchedAt };
      }
      throw e;
    }
  }

  /** The upstream's `providers.v1` base URL, from service discovery. */
  providersBase(hostname: string): Promise<URL> {
    return this.serviceBase(hostname, "providers.v1");
  }

  /** A service's base URL (`providers.v1`, `modules.v1`) from the upstream's discovery document. */
  async serviceBase(hostname: string, service: "providers.v1" | "modules.v1"): Promise<URL> {
    const client = this.client(hostname);
    const got = await this.#cached(
      refKeys.discovery(hostname),
      Math.max(this.config.metadataTtlMs, 3_600_000),
      async () => {
        const { text, url } = await client.getJson(client.discoveryUrl()).catch((e) => {
          if (e instanceof NotFoundError) throw noService(hostname, service);
          throw e;
        });
        return { fetchedAt: this.now(), url, body: text };
      },
      { hostname },
    );
    let doc: unknown;
    try {
      doc = JSON.parse(got.value.body);
    } catch {
      throw new UpstreamError(`upstream ${hostname} sent malformed service discovery`);
    }
    const value = (doc as Record<string, unknown>)?.[service];
    if (typeof value !== "string") throw noService(hostname, service);
    const base = new URL(value, got.value.url);
    if (base.protocol !== "https:" && base.protocol !== "http:") throw noService(hostname, service);
    if (!base.pathname.endsWith("/")) base.pathname += "/";
    return base;
  }

  /**
   * The upstream version list of a provider.
   *
   * @param want a version the client asked for: when the stored list lacks it,
   *   the list is refreshed at once instead of waiting for the TTL
   */
  async versions(p: ProviderRef, want?: string): Promise<Sourced<VersionsValue>> {
    const key = refKeys.versions(p);
    const fetcher = async (): Promise<RefEntry> => {
      const client = this.client(p.hostname);
      const base = await this.providersBase(p.hostname);
      const { text, url } = await client.getText(
        new URL(`${p.namespace}/${p.type}/versions`, base),
        {
          accept: "application/json",
        },
      );
      fromUpstream(p.hostname, () => parseVersions(text)); // refuse to store what we could not use
      return { fetchedAt: this.now(), url, body: text };
    };
    let got = await this.#cached(key, this.config.metadataTtlMs, fetcher, {
      hostname: p.hostname,
    });
    const parse = (e: RefEntry) =>
      parsedOnce(this.#parsedVersions, e, () => ({
        versions: fromUpstream(p.hostname, () => parseVersions(e.body)),
        raw: e.body,
      }));
    let value = parse(got.value);
    if (
      want !== undefined && got.status === "hit" &&
      !value.versions.some((v) => v.version === want) &&
      this.now() - (this.#lastForced.get(key) ?? 0) > FORCED_REFRESH_GAP_MS
    ) {
      this.#lastForced.set(key, this.now());
      got = await this.#cached(key, this.config.metadataTtlMs, fetcher, {
        hostname: p.hostname,
        force: true,
      });
      value = parse(got.value);
    }
    return {
      value,
      status: got.status,
      fetchedAt: got.fetchedAt,
    };
  }

  /** A version's entry from the version list, or NotFoundError. */
  async versionEntry(p: ProviderRef, version: string): Promise<Sourced<VersionEntry>> {
    const got = await this.versions(p, version);
    const entry = got.value.versions.find((v) => v.version === version);
    if (!entry) throw new NotFoundError(`provider ${providerString(p)} has no version ${version}`);
    return { value: entry, status: got.status, fetchedAt: got.fetchedAt };
  }

  /** The upstream download document for one platform (kept for good once fetched). */
  async download(
    p: ProviderRef,
    version: string,
    pl: PlatformRef,
  ): Promise<Sourced<DownloadValue>> {
    const got = await this.#cached(
      refKeys.download(p, version, pl),
      Infinity,
      async () => {
        const client = this.client(p.hostname);
        const base = await this.providersBase(p.hostname);
        const { text, url } = await client.getText(
          new URL(`${p.namespace}/${p.type}/${version}/download/${pl.os}/${pl.arch}`, base),
          { accept: "application/json" },
        );
        fromUpstream(p.hostname, () => parseDownload(text, pl));
        return { fetchedAt: this.now(), url, body: text };
      },
      { hostname: p.hostname },
    );
    const doc = parsedOnce(
      this.#parsedDownloads,
      got.value,
      () => fromUpstream(p.hostname, () => parseDownload(got.value.body, pl)),
    );
    return {
      value: { doc, raw: got.value.body, url: got.value.url },
      status: got.status,
      fetchedAt: got.fetchedAt,
    };
  }

  /**
   * SHA256SUMS and its signature for a version, fetched from the URLs the
   * download document names and kept for good — but only once the signature
   * verified against the upstream's signing keys (or the operator's pinned
   * `trustedKeys`). A release that fails is refused and nothing is stored.
   */
  async sums(p: ProviderRef, version: string, dl: DownloadValue): Promise<Sourced<SumsValue>> {
    const client = this.client(p.hostname);
    const upstream = this.config.upstreams.get(p.hostname);
    const what = `SHA256SUMS of ${providerString(p)} ${version}`;
    const got = await this.#cached(refKeys.sums(p, version), Infinity, async () => {
      if (!dl.doc.shasums_url) {
        throw new UpstreamError(
          `upstream ${p.hostname} names no shasums_url for ${providerString(p)} ${version}`,
        );
      }
      const offeredKeys = (dl.doc.signing_keys?.gpg_public_keys ?? [])
        .map((k) => k.ascii_armor)
        .filter((k): k is string => typeof k === "string" && k !== "");
      const trustedKeys = upstream?.trustedKeys ?? [];
      const unsigned = mayBeUnsigned(p.hostname, offeredKeys, trustedKeys);
      if (!dl.doc.shasums_signature_url && !unsigned) {
        throw new UpstreamError(`refusing ${what}: the upstream names no signature for it`);
      }
      const [sums, sig] = await Promise.all([
        client.getBytes(new URL(dl.doc.shasums_url, dl.url)),
        dl.doc.shasums_signature_url && !unsigned
          ? client.getBytes(new URL(dl.doc.shasums_signature_url, dl.url))
          : Promise.resolve(undefined),
      ]);
      try {
        const signer = await checkSumsSignature({
          hostname: p.hostname,
          sums: sums.body,
          signature: sig?.body,
          offeredKeys,
          trustedKeys,
        });
        if (signer) this.log.info("SHA256SUMS signature verified", { what, keyId: signer.keyId });
        else {
          this.log.warn("accepting unsigned SHA256SUMS (registry.opentofu.org lists no keys)", {
            what,
          });
        }
      } catch (e) {
        if (!(e instanceof IntegrityError)) throw e;
        this.log.error("SHA256SUMS signature does not verify; release refused", {
          what,
          error: e.message,
        });
        throw new UpstreamError(`refusing ${what}: ${e.message}`);
      }
      try {
        checkSumsFormat(sums.body);
      } catch (e) {
        if (!(e instanceof IntegrityError)) throw e;
        throw new UpstreamError(`refusing ${what}: ${e.message}`);
      }
      if (sig) {
        await this.#store(refKeys.signature(p, version), {
          fetchedAt: this.now(),
          url: sig.url,
          body: toBase64(sig.body),
          encoding: "base64",
        });
      }
      // base64 keeps the bytes exact (a text round trip could drop a BOM), and
      // the signature covers exactly these bytes.
      return {
        fetchedAt: this.now(),
        url: sums.url,
        body: toBase64(sums.body),
        encoding: "base64",
      };
    }, { hostname: p.hostname });
    const sig = await this.refs.get(refKeys.signature(p, version));
    return {
      value: {
        sums: parsedOnce(this.#parsedBytes, got.value, () => entryBytes(got.value)),
        signature: sig ? parsedOnce(this.#parsedBytes, sig, () => entryBytes(sig)) : undefined,
      },
      status: got.status,
      fetchedAt: got.value.fetchedAt,
    };
  }

  /**
   * The download document of an archive, checked against the verified
   * SHA256SUMS: its `shasum` must be the line for its `filename`. This is what
   * an archive download may trust.
   */
  async verifiedDownload(
    p: ProviderRef,
    version: string,
    pl: PlatformRef,
  ): Promise<Sourced<DownloadValue>> {
    const dl = await this.download(p, version, pl);
    const sums = await this.sums(p, version, dl.value);
    try {
      checkMatchingChecksum(
        checkSumsFormat(sums.value.sums),
        dl.value.doc.filename,
        dl.value.doc.shasum,
      );
    } catch (e) {
      if (!(e instanceof IntegrityError)) throw e;
      throw new UpstreamError(
        `refusing ${providerString(p)} ${version} ${platformString(pl)}: ${e.message}`,
      );
    }
    return { ...dl, status: worstStatus(dl.status, sums.status) };
  }

  /** Waits for metadata fetches still in flight (shutdown, tests). */
  async settle(): Promise<void> {
    await Promise.allSettled([...this.#inflight.values()]);
  }
}
