/**
 * Modules in the maintenance commands: `verify` re-hashes stored module
 * archives against their records; `export` copies them (with their records
 * and version lists) into the tree's `.repoxy/modules/` sidecar; `import`
 * takes them back on the far side of an air gap, re-hashing each and
 * re-checking every entry of the archive before it is stored; `warm`
 * fetches module versions named as `host/ns/name/system@version` or by a
 * `.terraform/modules/modules.json`.
 * @module
 */
import type { App } from "../app.ts";
import type { CacheDir } from "../cache/cache_dir.ts";
import { makeDirsInside } from "../cache/disk_storage.ts";
import type { Config } from "../config/config.ts";
import { join } from "../deps/path.ts";
import { copyHashed, sha256File } from "../integrity/hashing.ts";
import { isValidHostname, isValidPart, isValidVersion } from "../protocol/names.ts";
import type { ModuleRef } from "../protocol/paths.ts";
import { moduleVersionsKey } from "../modules/module_service.ts";
import {
  moduleKeys,
  ModuleStore,
  moduleVersionString,
  parseRecord,
} from "../modules/module_store.ts";
import { MAX_MODULE_FILES } from "../modules/module_service.ts";
import { unpackTarGz } from "../modules/unpack.ts";
import { SIDECAR } from "./registry_docs.ts";
import { entries, readBounded } from "./tree_files.ts";

/** What verifying the module archives found. */
export interface ModuleVerifyReport {
  checked: number;
  bytes: number;
  /** `name: reason; moved to …` per bad archive. */
  mismatches: string[];
}

/**
 * Re-hashes every stored module archive. A mismatch loses its record first
 * (so it is never served again; the next request fetches it anew) and its
 * archive goes to `quarantine/modules/…`.
 */
export async function verifyModules(
  cache: CacheDir,
  now: () => number,
): Promise<ModuleVerifyReport> {
  const store = new ModuleStore(cache.storage);
  const report: ModuleVerifyReport = { checked: 0, bytes: 0, mismatches: [] };
  const found = [];
  for await (const f of store.list()) found.push(f);
  for (const { module, version, info } of found) {
    const rec = await store.record(module, version);
    if (!rec) continue;
    const path = cache.storage.pathOf(info.key);
    let reason: string | undefined;
    try {
      const got = await sha256File(path);
      if (got.size !== rec.size) reason = `size ${got.size}, recorded ${rec.size}`;
      else if (got.sha256 !== rec.sha256) reason = `sha256 ${got.sha256}, recorded ${rec.sha256}`;
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) continue;
      reason = `cannot read it: ${(e as Error).message}`;
    }
    report.checked++;
    report.bytes += info.size;
    if (!reason) {
      await cache.storage.restoreTimes(info);
      continue;
    }
    const name = moduleVersionString(module, version);
    await cache.storage.delete(moduleKeys(module, version).record);
    const parts = ["quarantine", ...info.key.split("/").slice(0, -1)];
    const linked = await makeDirsInside(cache.root, parts);
    const stamp = new Date(now()).toISOString().replace(/[:.]/g, "-");
    const dest = join(cache.root, ...parts, `${info.key.split("/").at(-1)}.${stamp}`);
    if (linked) await Deno.remove(path).catch(() => {});
    else await Deno.rename(path, dest).catch(() => Deno.remove(path).catch(() => {}));
    report.mismatches.push(`${name}: ${reason}; moved to ${linked ? "nowhere (removed)" : dest}`);
  }
  return report;
}

/** Where a module version goes in an export tree. */
function sidecarDir(root: string, m: ModuleRef): string {
  return join(root, SIDECAR, "modules", m.hostname, m.namespace, m.name, m.system);
}

let tempSeq = 0;

/**
 * Copies every stored module archive (re-hashed on the way: a bad one is not
 * exported), its record and the module's version list into `outDir`'s sidecar.
 */
export async function exportModules(
  cache: CacheDir,
  outDir: string,
): Promise<{ exported: number; bytes: number; problems: string[] }> {
  const store = new ModuleStore(cache.storage);
  const out = { exported: 0, bytes: 0, problems: [] as string[] };
  const lists = new Set<string>();
  for await (const { module, version, info } of store.list()) {
    const rec = await store.record(module, version);
    if (!rec) continue;
    const dir = sidecarDir(outDir, module);
    await Deno.mkdir(dir, { recursive: true });
    const dest = join(dir, `${version}.tar.gz`);
    // Into a dot-prefixed temp file, renamed when whole: a failed or repeated export never
    // leaves a partial archive (or trips over the previous one) under its final name.
    const temp = join(dir, `.${version}.tar.gz.tmp-${Deno.pid}-${tempSeq++}`);
    let got: { sha256: string; size: number };
    try {
      using src = await Deno.open(cache.storage.pathOf(info.key));
      got = await copyHashed(src, temp, rec.size + 1);
    } catch (e) {
      await Deno.remove(temp).catch(() => {});
      throw e;
    }
    if (got.sha256 === rec.sha256 && got.size === rec.size) await Deno.rename(temp, dest);
    else {
      await Deno.remove(temp).catch(() => {});
      out.problems.push(
        `${
          moduleVersionString(module, version)
        }: NOT exported, its bytes differ from the record; run "repoxy verify"`,
      );
      continue;
    }
    await Deno.writeTextFile(join(dir, `${version}.json`), JSON.stringify(rec) + "\n");
    out.exported++;
    out.bytes += rec.size;
    const key = moduleVersionsKey(module);
    if (!lists.has(key)) {
      lists.add(key);
      const entry = await cache.refs.get(key);
      if (entry) await Deno.writeTextFile(join(dir, "versions.json"), JSON.stringify(entry) + "\n");
    }
  }
  return out;
}

/**
 * Imports the module archives of a tree's sidecar: names validated, each
 * archive re-hashed against its record and unpacked into a scratch folder
 * with every entry checked (a hostile archive is refused, not stored), then
 * stored with its record; version lists are taken when the cache has none
 * or an older one.
 */
export async function importModules(
  config: Config,
  cache: CacheDir,
  srcDir: string,
  problems: string[],
): Promise<{ imported: number; cached: number; refused: string[] }> {
  const out = { imported: 0, cached: 0, refused: [] as string[] };
  const store = new ModuleStore(cache.storage);
  const root = join(srcDir, SIDECAR, "modules");
  const bounds = { maxBytes: config.limits.archiveBytes, maxFiles: MAX_MODULE_FILES };
  for await (const host of entries(root, [])) {
    if (!host.isDirectory || !isValidHostname(host.name)) continue;
    for await (const ns of entries(join(root, host.name), problems)) {
      if (!ns.isDirectory || !isValidPart(ns.name)) continue;
      for await (const name of entries(join(root, host.name, ns.name), problems)) {
        if (!name.isDirectory || !isValidPart(name.name)) continue;
        for await (const sys of entries(join(root, host.name, ns.name, name.name), problems)) {
          if (!sys.isDirectory || !isValidPart(sys.name)) continue;
          const m: ModuleRef = {
            hostname: host.name,
            namespace: ns.name,
            name: name.name,
            system: sys.name,
          };
          const dir = join(root, host.name, ns.name, name.name, sys.name);
          for await (const f of entries(dir, problems)) {
            if (!f.isFile || !f.name.endsWith(".tar.gz")) continue;
            const version = f.name.slice(0, -7);
            if (!isValidVersion(version)) continue;
            const label = moduleVersionString(m, version);
            const why = await importOneModule(store, dir, m, version, bounds);
            if (why === "cached") out.cached++;
            else if (why === undefined) out.imported++;
            else out.refused.push(`${label}: ${why}`);
          }
          await importVersionList(cache, dir, m, config.limits.metadataDocumentBytes * 2);
        }
      }
    }
  }
  return out;
}

async function importOneModule(
  store: ModuleStore,
  dir: string,
  m: ModuleRef,
  version: string,
  bounds: { maxBytes: number; maxFiles: number },
): Promise<string | "cached" | undefined> {
  if (await store.record(m, version)) return "cached";
  let rec;
  try {
    rec = parseRecord(await readBounded(join(dir, `${version}.json`), 64 * 1024));
  } catch (e) {
    return `no readable record: ${(e as Error).message}`;
  }
  if (!rec) return "the record is not a module record";
  const temp = store.tempPath("import.tar.gz");
  const scratch = store.tempPath("import-check");
  try {
    const st = await Deno.lstat(join(dir, `${version}.tar.gz`));
    if (!st.isFile) return "not a regular file";
    if (st.size > bounds.maxBytes) return `over limits.archiveSize (${bounds.maxBytes} bytes)`;
    using src = await Deno.open(join(dir, `${version}.tar.gz`));
    const got = await copyHashed(src, temp, bounds.maxBytes);
    if (got.sha256 !== rec.sha256 || got.size !== rec.size) {
      return `its bytes (sha256 ${got.sha256}) differ from its record (${rec.sha256})`;
    }
    await Deno.mkdir(scratch, { recursive: true });
    try {
      using f = await Deno.open(temp);
      await unpackTarGz(f.readable, scratch, bounds);
    } catch (e) {
      return `refused: ${(e as Error).message}`;
    }
    await store.commit(m, version, temp, rec);
    return undefined;
  } catch (e) {
    return (e as Error).message;
  } finally {
    await Deno.remove(temp).catch(() => {});
    await Deno.remove(scratch, { recursive: true }).catch(() => {});
  }
}

async function importVersionList(cache: CacheDir, dir: string, m: ModuleRef, limit: number) {
  let entry;
  try {
    entry = JSON.parse(
      new TextDecoder().decode(await readBounded(join(dir, "versions.json"), limit)),
    );
  } catch {
    return;
  }
  if (
    !entry || typeof entry.body !== "string" || typeof entry.fetchedAt !== "number" ||
    typeof entry.url !== "string"
  ) return;
  try {
    if (!Array.isArray(JSON.parse(entry.body)?.modules)) return;
  } catch {
    return;
  }
  const key = moduleVersionsKey(m);
  const had = await cache.refs.get(key);
  if (had && had.fetchedAt >= entry.fetchedAt) return;
  await cache.refs.put(key, { fetchedAt: entry.fetchedAt, url: entry.url, body: entry.body });
}

/** A module version to warm. */
export interface ModuleWarmTarget {
  module: ModuleRef;
  version: string;
  source: string;
}

/** Whether a warm argument names a module (`host/ns/name/system@version`) or a `modules.json`. */
export function isModuleArg(arg: string): boolean {
  return /^[^/@]+\/[^/@]+\/[^/@]+\/[^/@]+@[^/@]+$/.test(arg) || arg.endsWith("modules.json");
}

/**
 * The module versions `args` name: addresses, and the registry modules a
 * `modules.json` lists (`Source` a registry address, `Version` set).
 */
export async function moduleTargets(args: string[]): Promise<ModuleWarmTarget[]> {
  const out: ModuleWarmTarget[] = [];
  const add = (addr: string, version: string, source: string) => {
    const segs = addr.split("//")[0]!.split("/");
    if (segs.length !== 4) {
      throw new Error(`${source}: "${addr}" is not host/namespace/name/system`);
    }
    const [hostname, namespace, name, system] = segs.map((s) => s.toLowerCase()) as [
      string,
      string,
      string,
      string,
    ];
    if (
      !isValidHostname(hostname) || !isValidPart(namespace) || !isValidPart(name) ||
      !isValidPart(system) || !isValidVersion(version)
    ) throw new Error(`${source}: "${addr}@${version}" is not a module version address`);
    out.push({ module: { hostname, namespace, name, system }, version, source });
  };
  for (const arg of args) {
    if (!arg.endsWith("modules.json")) {
      const at = arg.lastIndexOf("@");
      add(arg.slice(0, at), arg.slice(at + 1), arg);
      continue;
    }
    const doc = JSON.parse(new TextDecoder().decode(await readBounded(arg, 16 * 2 ** 20)));
    for (const m of Array.isArray(doc?.Modules) ? doc.Modules : []) {
      // Local paths and go-getter sources are not registry modules.
      if (typeof m?.Source !== "string" || typeof m?.Version !== "string" || !m.Version) continue;
      if (/^(\.|\/|[a-z0-9]+::)/.test(m.Source) || m.Source.includes("://")) continue;
      add(m.Source, m.Version, `${arg} (${m.Key})`);
    }
  }
  return out;
}

/** Outcome of warming one module version. */
export interface ModuleWarmItem {
  name: string;
  status: "fetched" | "cached" | "passed-through" | "failed";
  bytes: number;
  error?: string;
}

/** Warms module versions through the app's own handler (download answer, then the archive). */
export async function warmModules(
  app: App,
  targets: ModuleWarmTarget[],
): Promise<ModuleWarmItem[]> {
  const items: ModuleWarmItem[] = [];
  for (const t of targets) {
    const m = t.module;
    const name = moduleVersionString(m, t.version);
    const base = `http://repoxy.warm/v1/modules/${m.hostname}/${m.namespace}/${m.name}/${m.system}`;
    try {
      const v = await app.handle(new Request(`${base}/versions`));
      await v.body?.cancel();
      const d = await app.handle(new Request(`${base}/${t.version}/download`));
      await d.body?.cancel();
      if (d.status !== 204) throw new Error(`download answer ${d.status}`);
      const loc = d.headers.get("x-terraform-get") ?? "";
      if (!loc.includes(`/${t.version}/module.tar.gz`)) {
        items.push({ name, status: "passed-through", bytes: 0, error: `not cached: ${loc}` });
        continue;
      }
      const a = await app.handle(new Request(`${base}/${t.version}/module.tar.gz`));
      if (a.status !== 200) {
        const text = await a.text();
        throw new Error(`archive ${a.status}: ${text.slice(0, 200)}`);
      }
      // Counted as it streams: a module archive may be up to limits.archiveSize.
      let bytes = 0;
      for await (const chunk of a.body ?? []) bytes += chunk.length;
      items.push({
        name,
        status: a.headers.get("x-repoxy-cache") === "hit" ? "cached" : "fetched",
        bytes,
      });
    } catch (e) {
      items.push({ name, status: "failed", bytes: 0, error: (e as Error).message });
    }
  }
  return items;
}
