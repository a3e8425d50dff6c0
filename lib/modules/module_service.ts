/**
 * Modules as a pull-through cache: version lists kept in `refs/` with the
 * same freshness bound, single-flight, stale-if-error and offline behaviour
 * as provider lists (one {@link RefCache}); each version's source fetched
 * once, packed into a deterministic `.tar.gz` and stored for good
 * ({@link ModuleStore}); the download answer then points at Repoxy's own
 * archive, whatever the upstream named.
 *
 * What is cached: `git::https://` and `git::http://` sources (resolved to a
 * commit, fetched at depth 1 with the git CLI) and HTTP(S) `.tar.gz`, `.tgz`
 * and `.zip` archives (unpacked with every entry checked, then repacked).
 * Everything else (s3::, gcs::, hg::, ssh git, scheme-less) is answered with
 * the upstream's location unchanged and a log line saying why.
 *
 * Stored versions are immutable: when a git tag moves upstream, the pinned
 * commit goes on being served; the move is noticed (`git ls-remote`, at most
 * once per `metadataTtl` per version, in the background), logged and listed
 * on the status page.
 * @module
 */
import type { Logger } from "../base/log.ts";
import type { RefsStore } from "../cache/refs_store.ts";
import type { CacheStatus } from "../cache/cache_status.ts";
import type { Config } from "../config/config.ts";
import { NotFoundError, UpstreamError } from "../http/errors.ts";
import { unknownModuleMessage } from "../protocol/names.ts";
import type { ModuleRef } from "../protocol/paths.ts";
import type { UpstreamClient } from "../upstream/client.ts";
import type { EgressPolicy } from "../upstream/egress.ts";
import { RefCache } from "../upstream/ref_cache.ts";
import { Slots } from "../upstream/slots.ts";
import { fetchGitCommit, type GitProbe, probeGit, remoteCommit } from "./git_fetch.ts";
import {
  moduleKeys,
  type ModuleRecord,
  type ModuleStore,
  moduleVersionString,
} from "./module_store.ts";
import { type ModuleSource, parseModuleSource } from "./source_address.ts";
import { packDirectory } from "./tar_write.ts";
import { unpackTarGz, unpackZip } from "./unpack.ts";
import { boundedBody } from "./bounded_body.ts";

/** An upstream module registry answer (what `UpstreamSource.moduleAnswer` gives). */
export interface UpstreamModuleAnswer {
  status: number;
  url: URL;
  terraformGet?: string;
  body: string;
}

/** Dependencies of {@link ModuleService}. */
export interface ModuleServiceDeps {
  config: Config;
  refs: RefsStore;
  store: ModuleStore;
  log: Logger;
  now: () => number;
  shutdown: AbortSignal;
  egress: EgressPolicy;
  /** The upstream's answer for `versions` or `{version}/download` (online only). */
  answer?: (m: ModuleRef, suffix: string, signal?: AbortSignal) => Promise<UpstreamModuleAnswer>;
  /** The registry's HTTP client (archives are fetched without its token). */
  client?: (hostname: string) => UpstreamClient;
  /** Called with the storage key of each archive stored (the quota prunes for it). */
  onStored?: (key: string) => void;
  /** The git CLI's presence (default: probed once at start, online only). */
  git?: Promise<GitProbe>;
}

/** A moved upstream tag, as the status page lists it. */
export interface MovedTag {
  module: string;
  source: string;
  pinned: string;
  upstream: string;
  seenAt: number;
}

/** Where a client is to get a version from. */
export type ModuleLocation =
  | { kind: "cached"; subdir: string; status: CacheStatus }
  | { kind: "passthrough"; location: string; why: string };

/**
 * Deadline of fetching one version's source (git fetch or archive download,
 * unpacking and packing); the size is bounded by `limits.archiveSize`.
 */
export const MODULE_FETCH_TIMEOUT_MS = 300_000;

/** How old the list of stored versions may get before it is read again (status page, metrics). */
const RESCAN_MS = 30_000;

/**
 * Module sources fetched at once (git processes, archive downloads): many
 * download answers asked for at once must not start as many clones.
 */
export const MODULE_FETCH_CONCURRENCY = 4;

/** Largest number of files in one module. */
export const MAX_MODULE_FILES = 100_000;

/** Keys of module version lists in `refs/`. */
export function moduleVersionsKey(m: ModuleRef): string {
  return `modules/${m.hostname}/${m.namespace}/${m.name}/${m.system}/versions`;
}

/** One stored module version, as metrics and the status page list it. */
export interface StoredModule {
  module: ModuleRef;
  version: string;
  size: number;
  commit?: string;
}

/** Counters the metrics show. */
export interface ModuleStats {
  fetched: number;
  passedThrough: number;
  failed: number;
  refused: number;
}

/** The module side of the mirror. */
export class ModuleService {
  readonly #cache: RefCache;
  readonly #flights = new Map<string, Promise<ModuleRecord>>();
  readonly #slots = new Slots(MODULE_FETCH_CONCURRENCY);
  readonly #background = new Set<Promise<unknown>>();
  readonly #checkedAt = new Map<string, number>();
  /** Versions whose moved-tag check (a git process) is running. */
  readonly #checking = new Set<string>();
  /** Moved tags seen (newest last), bounded. */
  readonly moved = new Map<string, MovedTag>();
  readonly stats: ModuleStats = { fetched: 0, passedThrough: 0, failed: 0, refused: 0 };
  /** The git CLI probe (undefined offline: nothing is fetched). */
  readonly git: Promise<GitProbe> | undefined;
  #gitKnown: GitProbe | undefined;
  /** Stored versions by `host/ns/name/system@version` (filled at start, then as they are stored). */
  readonly #stored = new Map<string, StoredModule>();
  #scannedAt: number;

  constructor(readonly deps: ModuleServiceDeps) {
    const { negativeTtlMs, negativeEntries } = deps.config.limits;
    this.#cache = new RefCache(deps.refs, deps.log, deps.now, negativeTtlMs, negativeEntries);
    // The first scan is awaited by whoever wires the service (wiring.ts).
    this.#scannedAt = deps.now();
    if (!deps.config.offline) {
      this.git = (deps.git ?? probeGit()).then((g) => {
        this.#gitKnown = g;
        if (g.available) deps.log.info("modules: git CLI found", { git: g.detail });
        else {
          deps.log.warn(
            "modules: git CLI not found; git-sourced modules are passed through uncached",
            {
              git: g.detail,
            },
          );
        }
        return g;
      });
    }
  }

  /**
   * Reads which versions the store holds (start-up, and after maintenance
   * commands changed it): records with their archive.
   */
  async rescan(): Promise<void> {
    const found = new Map<string, StoredModule>();
    for await (const { module, version, info } of this.deps.store.list()) {
      const rec = await this.deps.store.record(module, version);
      if (!rec || rec.size !== info.size) continue;
      found.set(moduleVersionString(module, version), {
        module,
        version,
        size: rec.size,
        ...(rec.commit ? { commit: rec.commit } : {}),
      });
    }
    this.#stored.clear();
    for (const [k, v] of found) this.#stored.set(k, v);
  }

  /**
   * The stored versions, sorted by name. What the quota, `prune` or another
   * process removed or added shows within {@link RESCAN_MS}: a call finding the
   * list older than that rescans in the background.
   */
  stored(): StoredModule[] {
    const now = this.deps.now();
    if (now - this.#scannedAt > RESCAN_MS) {
      this.#scannedAt = now;
      this.#track(this.rescan().catch(() => {}));
    }
    return [...this.#stored.entries()].sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0).map(([, v]) =>
      v
    );
  }

  /** Bytes of the stored module archives. */
  get storedBytes(): number {
    let n = 0;
    for (const v of this.#stored.values()) n += v.size;
    return n;
  }

  /** What /readyz and the status page say about git ("not needed" offline). */
  gitStatus(): string {
    if (this.deps.config.offline) return "not needed (offline)";
    if (!this.#gitKnown) return "checking";
    return this.#gitKnown.available ? this.#gitKnown.detail : `missing: ${this.#gitKnown.detail}`;
  }

  /** The `versions` document of a module: cached like a provider's version list. */
  async versions(
    m: ModuleRef,
    signal?: AbortSignal,
  ): Promise<{ body: string; status: CacheStatus }> {
    const key = moduleVersionsKey(m);
    if (this.deps.config.offline) {
      const e = await this.deps.refs.get(key);
      if (!e) throw new NotFoundError(unknownModuleMessage(m, true));
      return { body: e.body, status: "hit" };
    }
    const got = await this.#cache.cached(key, this.deps.config.metadataTtlMs, async () => {
      const a = await this.#answer(m, "versions", signal);
      let doc: unknown;
      try {
        doc = JSON.parse(a.body);
      } catch { /* checked below */ }
      if (!Array.isArray((doc as { modules?: unknown })?.modules)) {
        throw new UpstreamError(
          `upstream ${m.hostname} sent a module version list that is not one`,
        );
      }
      return { fetchedAt: this.deps.now(), url: a.url.href, body: a.body };
    }, { hostname: m.hostname });
    return { body: got.value.body, status: got.status };
  }

  /** Fetches an upstream answer, turning its status into errors. */
  async #answer(m: ModuleRef, suffix: string, signal?: AbortSignal): Promise<UpstreamModuleAnswer> {
    if (!this.deps.answer) throw new NotFoundError(unknownModuleMessage(m, true));
    const a = await this.deps.answer(m, suffix, signal);
    if (a.status === 404) throw new NotFoundError(unknownModuleMessage(m, false));
    if (a.status !== 200 && a.status !== 204) {
      const e = new UpstreamError(
        `upstream ${m.hostname} answered ${a.status} for ${a.url.pathname}`,
      );
      e.transient = a.status >= 500;
      throw e;
    }
    return a;
  }

  /** The upstream's location for a version (the download answer's header, or its JSON `location`). */
  async #location(m: ModuleRef, version: string, signal?: AbortSignal): Promise<string> {
    const a = await this.#answer(m, `${version}/download`, signal);
    let loc = a.terraformGet;
    if (!loc && a.body) {
      try {
        const doc = JSON.parse(a.body);
        if (typeof doc?.location === "string") loc = doc.location;
      } catch { /* no JSON body */ }
    }
    if (!loc) {
      throw new UpstreamError(`upstream ${m.hostname} named no location for ${version}`);
    }
    // A JSON `location` may hold anything: a CR/LF would be refused as a header
    // (a 500), a NUL lost by the URL parser. An upstream fault, said as one.
    // deno-lint-ignore no-control-regex
    if (/[\x00-\x1f\x7f]/.test(loc) || loc.length > 8192) {
      throw new UpstreamError(
        `upstream ${m.hostname} named a location for ${version} with a control character or over 8192 characters`,
      );
    }
    return loc;
  }

  /** Why a source is not cached, or undefined when it is. */
  #notCached(src: ModuleSource): string | undefined {
    if (src.kind === "other") return src.why;
    if (src.kind === "git" && this.#gitKnown && !this.#gitKnown.available) {
      return "the git CLI is not available on this mirror";
    }
    return undefined;
  }

  /**
   * Where the client gets a version: Repoxy's stored archive (fetched in the
   * background now if not yet stored), or the upstream's location unchanged.
   */
  async download(m: ModuleRef, version: string, signal?: AbortSignal): Promise<ModuleLocation> {
    const record = await this.deps.store.record(m, version);
    if (record) {
      this.#checkMoved(m, version, record);
      return { kind: "cached", subdir: record.subdir, status: "hit" };
    }
    if (this.deps.config.offline) throw new NotFoundError(unknownModuleMessage(m, true));
    await this.git;
    const location = await this.#location(m, version, signal);
    const src = parseModuleSource(location);
    const why = this.#notCached(src);
    if (why !== undefined || src.kind === "other") {
      this.stats.passedThrough++;
      this.deps.log.info("module source passed through uncached", {
        module: moduleVersionString(m, version),
        reason: why ?? "",
      });
      return { kind: "passthrough", location, why: why ?? "" };
    }
    // Started now: the client asks for the archive next.
    this.#track(this.ensure(m, version, src).catch(() => {}));
    return { kind: "cached", subdir: src.subdir, status: "miss" };
  }

  /**
   * The stored record of a version, fetching and storing it first when
   * needed (one fetch per version however many ask).
   */
  ensure(m: ModuleRef, version: string, given?: ModuleSource): Promise<ModuleRecord> {
    const key = moduleVersionString(m, version);
    let flight = this.#flights.get(key);
    if (!flight) {
      flight = (async () => {
        const had = await this.#intact(m, version);
        if (had) return had;
        if (this.deps.config.offline) throw new NotFoundError(unknownModuleMessage(m, true));
        await this.git;
        const src = given ?? parseModuleSource(await this.#location(m, version));
        const why = this.#notCached(src);
        if (why !== undefined || src.kind === "other") {
          throw new NotFoundError(`module ${key} is not cached: ${why}`);
        }
        await this.#slots.take(this.deps.shutdown);
        try {
          // Another process may have stored it while this one waited.
          return await this.#intact(m, version) ?? await this.#fetch(m, version, src);
        } finally {
          this.#slots.give();
        }
      })().finally(() => this.#flights.delete(key));
      this.#flights.set(key, flight);
    }
    return flight;
  }

  /**
   * The record of a stored version whose archive is there with its recorded
   * size. A record whose archive is gone or truncated (removed by hand, a
   * disk fault) is dropped, so the version is fetched again instead of
   * answering "stored" for good while serving nothing.
   */
  async #intact(m: ModuleRef, version: string): Promise<ModuleRecord | undefined> {
    const { store, log } = this.deps;
    const rec = await store.record(m, version);
    if (!rec) return undefined;
    const info = await store.storage.stat(moduleKeys(m, version).archive);
    if (info?.size === rec.size) return rec;
    log.warn("stored module archive missing or damaged; fetching it again", {
      module: moduleVersionString(m, version),
      size: info?.size ?? null,
      recorded: rec.size,
    });
    await store.storage.delete(moduleKeys(m, version).record);
    this.#stored.delete(moduleVersionString(m, version));
    return undefined;
  }

  async #fetch(
    m: ModuleRef,
    version: string,
    src: Exclude<ModuleSource, { kind: "other" }>,
  ): Promise<ModuleRecord> {
    const { store, config, log } = this.deps;
    const name = moduleVersionString(m, version);
    const work = store.tempPath("module-work");
    const archive = store.tempPath("module.tar.gz");
    const bounds = { maxBytes: config.limits.archiveBytes, maxFiles: MAX_MODULE_FILES };
    const signal = AbortSignal.any([
      this.deps.shutdown,
      AbortSignal.timeout(MODULE_FETCH_TIMEOUT_MS),
    ]);
    const started = performance.now();
    try {
      await Deno.mkdir(work, { recursive: true });
      let commit: string | undefined;
      let tree = `${work}/tree`;
      if (src.kind === "git") {
        commit = await fetchGitCommit(src.url, src.ref, work, {
          egress: this.deps.egress,
          maxBytes: bounds.maxBytes,
          maxFiles: bounds.maxFiles,
          timeoutMs: MODULE_FETCH_TIMEOUT_MS,
          signal,
        });
      } else {
        tree = await this.#fetchArchive(m, src, work, bounds, signal);
      }
      const packed = await packDirectory(tree, archive, bounds);
      // The ref encoded: `&`, `#` and `%` are legal in git ref names, and the
      // moved-tag check parses this string again.
      const source = src.kind === "git"
        ? `git::${src.url.href}${
          src.ref !== undefined ? `?ref=${encodeURIComponent(src.ref)}` : ""
        }`
        : `${src.url.origin}${src.url.pathname}`;
      const record: ModuleRecord = {
        sha256: packed.sha256,
        size: packed.size,
        source,
        ...(commit ? { commit } : {}),
        subdir: src.subdir,
        fetchedAt: this.deps.now(),
      };
      const stored = await store.commit(m, version, archive, record);
      this.stats.fetched++;
      this.deps.onStored?.(moduleKeys(m, version).archive);
      this.#stored.set(name, {
        module: m,
        version,
        size: stored.size,
        ...(stored.commit ? { commit: stored.commit } : {}),
      });
      log.info("module stored", {
        module: name,
        source,
        commit: commit ?? null,
        sha256: stored.sha256,
        size: stored.size,
        files: packed.files,
        skippedLinks: packed.skipped,
        ms: Math.round(performance.now() - started),
      });
      return stored;
    } catch (e) {
      const hostile = (e as Error).name === "HostileArchiveError" ||
        (e as Error).message.includes("over the bound") ||
        (e as Error).name === "EgressRefusedError" || (e as Error).name === "PackTooLargeError";
      if (hostile) this.stats.refused++;
      else this.stats.failed++;
      log.warn("module fetch failed; nothing stored", {
        module: name,
        error: (e as Error).message,
      });
      if (e instanceof NotFoundError || e instanceof UpstreamError) throw e;
      throw new UpstreamError(`module ${name} could not be fetched: ${(e as Error).message}`);
    } finally {
      await Deno.remove(work, { recursive: true }).catch(() => {});
      await Deno.remove(archive).catch(() => {});
    }
  }

  /** Downloads and unpacks an archive source into `{work}/tree`; returns the tree. */
  async #fetchArchive(
    m: ModuleRef,
    src: Extract<ModuleSource, { kind: "archive" }>,
    work: string,
    bounds: { maxBytes: number; maxFiles: number },
    signal: AbortSignal,
  ): Promise<string> {
    if (!this.deps.client) throw new NotFoundError(unknownModuleMessage(m, true));
    const client = this.deps.client(m.hostname);
    // Never the registry's token: the archive host is someone else.
    const { res } = await client.get(src.url, { auth: false, signal });
    if (res.status !== 200) {
      await res.body?.cancel();
      const e = new UpstreamError(`module archive ${src.url.host} answered ${res.status}`);
      e.transient = res.status >= 500;
      throw e;
    }
    const body = boundedBody(res, bounds.maxBytes, `module archive from ${src.url.host}`);
    const tree = `${work}/tree`;
    await Deno.mkdir(tree);
    if (src.format === "tar.gz") {
      await unpackTarGz(body, tree, bounds);
    } else {
      const zip = `${work}/source.zip`;
      const f = await Deno.open(zip, { write: true, createNew: true });
      try {
        for await (const chunk of body) {
          let off = 0;
          while (off < chunk.length) off += await f.write(chunk.subarray(off));
        }
      } finally {
        f.close();
      }
      await unpackZip(zip, tree, bounds);
    }
    return tree;
  }

  /**
   * In the background, at most once per `metadataTtl` per version: whether
   * the git ref a stored version came from still names the pinned commit.
   */
  #checkMoved(m: ModuleRef, version: string, record: ModuleRecord): void {
    if (!record.commit || !record.source.startsWith("git::") || this.deps.config.offline) return;
    const key = moduleVersionString(m, version);
    const now = this.deps.now();
    const last = this.#checkedAt.get(key);
    if (last !== undefined && now - last < Math.max(this.deps.config.metadataTtlMs, 1)) return;
    if (this.#gitKnown && !this.#gitKnown.available) return;
    // Each check is a git process: one per version at a time, a few at once
    // in all; a busy moment skips it (the next answer tries again). Without
    // this, answers in a burst (metadataTtl 0) each spawned one.
    if (this.#checking.has(key) || this.#checking.size >= MODULE_FETCH_CONCURRENCY) return;
    this.#checkedAt.set(key, now);
    if (this.#checkedAt.size > 10_000) this.#checkedAt.delete(this.#checkedAt.keys().next().value!);
    const src = parseModuleSource(record.source);
    if (src.kind !== "git") return;
    this.#checking.add(key);
    this.#track(
      (async () => {
        const upstream = await remoteCommit(src.url, src.ref, {
          egress: this.deps.egress,
          maxBytes: this.deps.config.limits.archiveBytes,
          timeoutMs: this.deps.config.upstreamTimeoutMs,
          signal: this.deps.shutdown,
        });
        if (upstream === undefined || upstream === record.commit) {
          this.moved.delete(key);
          return;
        }
        const seen: MovedTag = {
          module: key,
          source: record.source,
          pinned: record.commit!,
          upstream,
          seenAt: this.deps.now(),
        };
        this.moved.delete(key);
        this.moved.set(key, seen);
        if (this.moved.size > 1000) this.moved.delete(this.moved.keys().next().value!);
        this.deps.log.warn("module tag moved upstream; serving the pinned commit", {
          module: key,
          source: record.source,
          pinned: record.commit!,
          upstream,
        });
      })().catch((e) => {
        this.deps.log.log("debug", "module tag check failed", {
          module: key,
          error: (e as Error).message,
        });
      }).finally(() => this.#checking.delete(key)),
    );
  }

  #track(p: Promise<unknown>): void {
    this.#background.add(p);
    p.finally(() => this.#background.delete(p));
  }

  /** Waits for background fetches and checks (shutdown, tests). */
  async settle(): Promise<void> {
    while (this.#background.size > 0 || this.#flights.size > 0) {
      await Promise.allSettled([...this.#background, ...this.#flights.values()]);
    }
    await this.git;
  }
}
