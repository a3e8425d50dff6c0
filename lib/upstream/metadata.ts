/**
 * Upstream metadata with caching: service discovery, version lists, download
 * documents, SHA256SUMS and signatures, fetched from the upstream registries
 * and kept in `refs/`. One copy of the truth serves both the network mirror
 * and the registry protocol. (Offline, nothing here is used: the cache
 * source answers from what is stored.)
 *
 * Freshness rules, as an HTTP cache keeps them: a version list is fresh for
 * `metadataTtl` (default 30 s), then revalidated with the upstream's
 * validators (a 304 keeps it, status `revalidated`); discovery is refreshed
 * hourly; download documents and checksums of a released version never
 * change and are kept for good. When a refresh fails and something is
 * stored, the stored copy is served and marked stale.
 *
 * Which archives a version has is what its signed SHA256SUMS names; the
 * version list's `platforms` is only a hint (Terraform ignores it, and real
 * registries list platforms whose download is 404, leave existing ones out,
 * or list none). SHA256SUMS is found through any download document of the
 * version that exists: the listed platforms first, then the client's own,
 * then common ones.
 *
 * Hostile upstreams and clients are bounded here: no document bigger than
 * `limits.metadataDocument` is read; what the upstream says does not exist
 * (a 404, a platform SHA256SUMS does not name) is remembered for
 * `limits.negativeTtl` in a bounded {@link NegativeCache}, so asking again
 * costs no upstream request; presigned URLs in download documents are stored
 * redacted and the document is fetched again when an archive is downloaded.
 * @module
 */
import type { Config } from "../config/config.ts";
import { NotFoundError, UpstreamError } from "../http/errors.ts";
import type { Logger } from "../base/log.ts";
import { REDACTED, redactUrl } from "../base/redact.ts";
import { NegativeCache } from "../cache/negative_cache.ts";
import {
  archiveFilename,
  type PlatformRef,
  platformString,
  type ProviderRef,
  providerString,
  unknownProviderMessage,
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
import { parseSha256Sums } from "../protocol/sha256sums.ts";
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
import { MAX_SIGNATURE_BYTES, prepareSignatureCheck } from "../integrity/signature.ts";
import { type UpstreamClient, upstreamUrl } from "./client.ts";
import { NOT_MODIFIED, parsedOnce, RefCache } from "./ref_cache.ts";
import { Slots } from "./slots.ts";
import { sumsDocument } from "./sums_search.ts";

function noService(hostname: string, service: string): NotFoundError {
  return new NotFoundError(`upstream ${hostname} does not offer ${service}`);
}

/** Minimum gap between refreshes forced by a client asking for an unlisted version. */
const FORCED_REFRESH_GAP_MS = 30_000;

const URL_FIELDS = ["download_url", "shasums_url", "shasums_signature_url"] as const;

/**
 * A download document as it may be stored: URLs with their query string
 * (a presigned URL's credential) redacted. The text unchanged (not even
 * parsed again) when no URL needed it.
 *
 * @param parsed the document `text` parses to
 */
export function redactDownloadDoc(text: string, parsed: DownloadDoc): string {
  const redacted: Record<string, string> = {};
  for (const k of URL_FIELDS) {
    const v = parsed[k];
    if (typeof v !== "string") continue;
    const r = redactUrl(v);
    if (r !== v) redacted[k] = r;
  }
  if (Object.keys(redacted).length === 0) return text;
  return JSON.stringify({ ...JSON.parse(text), ...redacted });
}

/** Whether a stored download document had a URL redacted (so it cannot be fetched from). */
function isRedacted(doc: DownloadDoc): boolean {
  return URL_FIELDS.some((k) => {
    const v = doc[k];
    return typeof v === "string" && v.endsWith(`?${REDACTED}`);
  });
}

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

/** A download document as fetched, before anything is stored. */
interface FetchedDoc {
  text: string;
  url: string;
  doc: DownloadDoc;
}

/** Metadata access for all upstreams. */
export class Metadata {
  /** Stored entries: freshness, single-flight, remembered absences, stale-if-error. */
  readonly #cache: RefCache;
  /** Providers whose list was refreshed because a client named a version it lacks. */
  readonly #lastForced: NegativeCache;
  readonly #live = new Map<string, Promise<DownloadValue>>();
  readonly #parsedVersions = new WeakMap<RefEntry, VersionsValue>();
  readonly #parsedDownloads = new WeakMap<RefEntry, DownloadDoc>();
  readonly #parsedBytes = new WeakMap<RefEntry, Uint8Array>();
  readonly #parsedSums = new WeakMap<Uint8Array, Map<string, string>>();
  /**
   * Download documents fetched beyond the first one an answer reads:
   * `limits.platformConcurrency` at a time across every `{version}.json`
   * fan-out and every search for a version's SHA256SUMS together.
   */
  readonly platformSlots: Slots;

  constructor(
    readonly config: Config,
    readonly refs: RefsStore,
    readonly clients: Map<string, UpstreamClient>,
    readonly log: Logger,
    readonly now: () => number = Date.now,
  ) {
    const { negativeTtlMs, negativeEntries } = config.limits;
    this.#cache = new RefCache(refs, log, now, negativeTtlMs, negativeEntries);
    // Bounded too: thousands of made-up providers must not grow it.
    this.#lastForced = new NegativeCache(FORCED_REFRESH_GAP_MS, negativeEntries, now);
    this.platformSlots = new Slots(config.limits.platformConcurrency);
  }

  /** Largest document read from an upstream. */
  get #maxBytes(): number {
    return this.config.limits.metadataDocumentBytes;
  }

  /** Number of remembered absences (tests, metrics). */
  get negativeEntries(): number {
    return this.#cache.negative.size;
  }

  /** The client for a configured upstream; other hostnames are never contacted. */
  client(hostname: string): UpstreamClient {
    const c = this.clients.get(hostname);
    if (!c) throw new NotFoundError(`registry ${hostname} is not configured on this mirror`);
    return c;
  }

  /** The upstream's `providers.v1` base URL, from service discovery. */
  providersBase(hostname: string): Promise<URL> {
    return this.serviceBase(hostname, "providers.v1");
  }

  /** A service's base URL (`providers.v1`, `modules.v1`) from the upstream's discovery document. */
  async serviceBase(hostname: string, service: "providers.v1" | "modules.v1"): Promise<URL> {
    const client = this.client(hostname);
    const got = await this.#cache.cached(
      refKeys.discovery(hostname),
      Math.max(this.config.metadataTtlMs, 3_600_000),
      async () => {
        const { text, url } = await client.getJson(client.discoveryUrl(), {
          maxBytes: this.#maxBytes,
        }).catch((e) => {
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
    const base = upstreamUrl(value, got.value.url, hostname, service);
    if (base.protocol !== "https:" && base.protocol !== "http:") throw noService(hostname, service);
    if (!base.pathname.endsWith("/")) base.pathname += "/";
    client.trustServiceBase(service, base);
    return base;
  }

  /**
   * The upstream version list of a provider, HTTP-cache style: fresh for
   * {@link Config.metadataTtlMs} after it was fetched or last confirmed;
   * then revalidated with the validators the upstream gave (`If-None-Match`
   * / `If-Modified-Since`; a plain refetch when it gave none). A 304 keeps
   * the stored list (status `revalidated`); new bytes replace it; an
   * upstream that fails or is slow gets the stored list served `stale`
   * (see {@link RefCache.cached}: single-flight, 2 s grace).
   *
   * @param want a version the client asked for: when the stored list lacks it,
   *   the list is refreshed at once instead of waiting for the TTL
   */
  async versions(p: ProviderRef, want?: string): Promise<Sourced<VersionsValue>> {
    const key = refKeys.versions(p);
    const fetcher = async (stored?: RefEntry): Promise<RefEntry | typeof NOT_MODIFIED> => {
      const client = this.client(p.hostname);
      const base = await this.providersBase(p.hostname);
      const url = new URL(`${p.namespace}/${p.type}/versions`, base);
      const given = {
        ...(stored?.etag !== undefined ? { etag: stored.etag } : {}),
        ...(stored?.lastModified !== undefined ? { lastModified: stored.lastModified } : {}),
      };
      const got = await client.getTextConditional(url, given, {
        accept: "application/json",
        maxBytes: this.#maxBytes,
      }).catch((e) => {
        // The same words as a hidden provider's answer (see unknownProviderMessage).
        throw e instanceof NotFoundError ? new NotFoundError(unknownProviderMessage(p, false)) : e;
      });
      if (got.notModified) return NOT_MODIFIED;
      fromUpstream(p.hostname, () => parseVersions(got.text)); // refuse to store what we could not use
      return { fetchedAt: this.now(), url: got.url, body: got.text, ...got.validators };
    };
    let got = await this.#cache.cached(key, this.config.metadataTtlMs, fetcher, {
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
      !this.#lastForced.has(key)
    ) {
      this.#lastForced.add(key);
      got = await this.#cache.cached(key, this.config.metadataTtlMs, fetcher, {
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

  /**
   * The download document of a platform the client named. The version's
   * `platforms` list is only a hint (Terraform ignores it, and real
   * registries get it wrong): a platform it lists is asked upstream; one it
   * does not list is asked only when the version's signed SHA256SUMS names
   * its archive, so a made-up platform costs no upstream request once
   * SHA256SUMS is stored (and is remembered as missing).
   *
   * @param signal aborted when the caller stops waiting (ends a search for SHA256SUMS)
   */
  async listedDownload(
    p: ProviderRef,
    version: string,
    pl: PlatformRef,
    signal?: AbortSignal,
  ): Promise<Sourced<DownloadValue>> {
    const key = refKeys.download(p, version, pl);
    if (!(await this.refs.get(key))) {
      const missing = this.#cache.negative.get(key);
      if (missing !== undefined) throw new NotFoundError(missing);
      const entry = await this.versionEntry(p, version);
      const listed = entry.value.platforms ?? [];
      if (!listed.some((x) => x.os === pl.os && x.arch === pl.arch)) {
        // The client's own platform is worth a try in the search: a release
        // built for it alone would not be found through the others.
        const sums = await this.versionSums(p, version, signal, pl);
        const named = sums.value
          ? this.sumsMap(sums.value).has(archiveFilename(p.type, version, pl))
          // No SHA256SUMS to decide by: a list that names no platforms at
          // all says nothing about them (ask upstream); one that names
          // others says this one is not there.
          : listed.length === 0;
        if (!named) {
          const reason = `provider ${providerString(p)} ${version} has no platform ${
            platformString(pl)
          }`;
          this.#cache.negative.add(key, reason);
          throw new NotFoundError(reason);
        }
      }
    }
    return await this.download(p, version, pl);
  }

  /**
   * SHA256SUMS of a version as filename → lower-case sha256, parsed once per
   * stored copy.
   */
  sumsMap(s: SumsValue): Map<string, string> {
    let map = this.#parsedSums.get(s.sums);
    if (!map) {
      map = parseSha256Sums(new TextDecoder().decode(s.sums));
      this.#parsedSums.set(s.sums, map);
    }
    return map;
  }

  /**
   * The signed SHA256SUMS of a version, which says which archives exist —
   * found through any download document of the version that exists. Value
   * `undefined` when the first document that exists names no SHA256SUMS
   * (then each platform's document is its own authority).
   *
   * @param signal aborted when the caller stops waiting: no more documents are tried
   * @param also a platform to try after the listed ones (the one a client asked for)
   * @throws {UpstreamError} when no platform tried has a download document
   */
  async versionSums(
    p: ProviderRef,
    version: string,
    signal?: AbortSignal,
    also?: PlatformRef,
  ): Promise<Sourced<SumsValue | undefined>> {
    if (await this.refs.get(refKeys.sums(p, version))) return await this.sums(p, version);
    const found = await sumsDocument(this, this.#cache.negative, p, version, signal, also);
    if (!found.value.doc.shasums_url) {
      return { value: undefined, status: found.status, fetchedAt: found.fetchedAt };
    }
    const s = await this.sums(p, version, found.value);
    return { ...s, status: worstStatus(found.status, s.status) };
  }

  /** Fetches a platform's download document from the upstream (the caller decides what to keep). */
  async #fetchDownload(p: ProviderRef, version: string, pl: PlatformRef): Promise<FetchedDoc> {
    const client = this.client(p.hostname);
    const base = await this.providersBase(p.hostname);
    const { text, url } = await client.getText(
      new URL(`${p.namespace}/${p.type}/${version}/download/${pl.os}/${pl.arch}`, base),
      { accept: "application/json", maxBytes: this.#maxBytes },
    );
    return { text, url, doc: fromUpstream(p.hostname, () => parseDownload(text, pl)) };
  }

  /**
   * The upstream download document for one platform (kept for good once
   * fetched, with presigned URLs redacted: see {@link liveDownload}).
   */
  async download(
    p: ProviderRef,
    version: string,
    pl: PlatformRef,
  ): Promise<Sourced<DownloadValue>> {
    // The caller that fetched it may use the unredacted document right away
    // (no second request for the SHA256SUMS or archive that usually follow).
    let fresh: FetchedDoc | undefined;
    const got = await this.#cache.cached(
      refKeys.download(p, version, pl),
      Infinity,
      async () => {
        fresh = await this.#fetchDownload(p, version, pl);
        return {
          fetchedAt: this.now(),
          url: fresh.url,
          body: redactDownloadDoc(fresh.text, fresh.doc),
        };
      },
      { hostname: p.hostname },
    );
    if (fresh && got.status === "miss") {
      return {
        value: { doc: fresh.doc, raw: got.value.body, url: fresh.url },
        status: got.status,
        fetchedAt: got.fetchedAt,
      };
    }
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
   *
   * @param given a download document of the version naming where SHA256SUMS
   *   is (any platform's: see {@link versionSums} to find one)
   */
  async sums(
    p: ProviderRef,
    version: string,
    given?: DownloadValue,
  ): Promise<Sourced<SumsValue>> {
    const client = this.client(p.hostname);
    const upstream = this.config.upstreams.get(p.hostname);
    const what = `SHA256SUMS of ${providerString(p)} ${version}`;
    const got = await this.#cache.cached(refKeys.sums(p, version), Infinity, async () => {
      // Without a document at hand (SHA256SUMS went from the disk since the
      // caller looked), any document of the version leads to it.
      const doc = given ?? (await sumsDocument(this, this.#cache.negative, p, version)).value;
      // The stored document's URLs may be redacted: ask the upstream again for usable ones.
      const dl = isRedacted(doc.doc) ? await this.liveDownload(p, version, doc) : doc;
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
      // Both URLs resolved before either fetch starts: a malformed one must
      // not leave the other request running unawaited.
      const sumsUrl = upstreamUrl(dl.doc.shasums_url, dl.url, p.hostname, "shasums_url");
      const sigUrl = dl.doc.shasums_signature_url && !unsigned
        ? upstreamUrl(dl.doc.shasums_signature_url, dl.url, p.hostname, "shasums_signature_url")
        : undefined;
      // OpenPGP is loaded on first use: let that overlap these fetches.
      if (sigUrl) prepareSignatureCheck();
      const [sums, sig] = await Promise.all([
        client.getBytes(sumsUrl, { maxBytes: this.#maxBytes }),
        // A .sig over MAX_SIGNATURE_BYTES is refused anyway: not read past it.
        sigUrl
          ? client.getBytes(sigUrl, { maxBytes: Math.min(this.#maxBytes, MAX_SIGNATURE_BYTES) })
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
        await this.#cache.store(refKeys.signature(p, version), {
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
    // Only a platform the version lists (or whose document is stored) goes upstream.
    const stored = await this.listedDownload(p, version, pl);
    const sums = await this.sums(p, version, stored.value);
    const dl = { ...stored, value: await this.liveDownload(p, version, stored.value) };
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

  /**
   * A download document whose URLs can be fetched from. The stored copy
   * keeps no query strings (presigned URLs carry their credential there), so
   * when one was redacted the document is fetched from the upstream again
   * (shared by concurrent callers, never stored). Its checksum must be the
   * stored one: the stored document is what was verified and served.
   */
  async liveDownload(
    p: ProviderRef,
    version: string,
    stored: DownloadValue,
  ): Promise<DownloadValue> {
    if (!isRedacted(stored.doc)) return stored;
    const pl = { os: stored.doc.os, arch: stored.doc.arch };
    const key = refKeys.download(p, version, pl);
    let live = this.#live.get(key);
    if (!live) {
      live = this.#fetchDownload(p, version, pl).then(({ text, url, doc }) => {
        if (doc.shasum.toLowerCase() !== stored.doc.shasum.toLowerCase()) {
          throw new UpstreamError(
            `upstream ${p.hostname} changed the checksum of ${providerString(p)} ${version} ${
              platformString(pl)
            }`,
          );
        }
        return { doc, raw: text, url };
      });
      this.#live.set(key, live);
      live.finally(() => this.#live.delete(key)).catch(() => {});
    }
    return await live;
  }

  /** Waits for metadata fetches still in flight (shutdown, tests). */
  async settle(): Promise<void> {
    await Promise.allSettled([...this.#cache.pending(), ...this.#live.values()]);
  }
}
