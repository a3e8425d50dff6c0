/**
 * Where module archives live, on the {@link Storage} seam beside `packages/`:
 * `modules/{host}/{namespace}/{name}/{system}/{version}.tar.gz` and its
 * record `….json` ({@link ModuleRecord}). The archive is committed first and
 * the record last, so a record names an archive that is complete; a version
 * without a record is not stored. Once stored, a version is never replaced
 * (a moved upstream tag changes nothing here).
 * @module
 */
import type { ModuleRef } from "../protocol/paths.ts";
import type { ObjectInfo, OpenObject, Storage } from "../cache/storage.ts";
import { validSubdir } from "./source_address.ts";

/** The storage prefix of every module object. */
export const MODULES_PREFIX = "modules/";

/** What is known about one stored module version. */
export interface ModuleRecord {
  /** sha256 (hex) of the `.tar.gz`. */
  sha256: string;
  /** Bytes of the `.tar.gz`. */
  size: number;
  /** The upstream source it was made from (an archive URL without its query string). */
  source: string;
  /** The commit a git source resolved to. */
  commit?: string;
  /** The `//subdir` the upstream named ("" for none), appended to Repoxy's URL. */
  subdir: string;
  /** Epoch ms when it was fetched. */
  fetchedAt: number;
}

/** One module version as `host/ns/name/system@version`. */
export function moduleVersionString(m: ModuleRef, version: string): string {
  return `${m.hostname}/${m.namespace}/${m.name}/${m.system}@${version}`;
}

/** The storage keys of a module version. */
export function moduleKeys(m: ModuleRef, version: string): { archive: string; record: string } {
  const base = `${MODULES_PREFIX}${m.hostname}/${m.namespace}/${m.name}/${m.system}/${version}`;
  return { archive: `${base}.tar.gz`, record: `${base}.json` };
}

/** Parses a module key (either file) back to its module and version, or undefined. */
export function parseModuleKey(
  key: string,
): { module: ModuleRef; version: string; file: "archive" | "record" } | undefined {
  if (!key.startsWith(MODULES_PREFIX)) return undefined;
  const segs = key.slice(MODULES_PREFIX.length).split("/");
  if (segs.length !== 5) return undefined;
  const [hostname, namespace, name, system, last] = segs as [
    string,
    string,
    string,
    string,
    string,
  ];
  const file = last.endsWith(".tar.gz") ? "archive" : last.endsWith(".json") ? "record" : undefined;
  if (!file) return undefined;
  const version = last.slice(0, file === "archive" ? -7 : -5);
  return { module: { hostname, namespace, name, system }, version, file };
}

// deno-lint-ignore no-control-regex
const CONTROL = /[\x00-\x1f\x7f]/;

/**
 * Parses a record; undefined when it is not one. Checked field by field, not
 * only typed: a record may come from an imported bundle or a shared store,
 * and its `subdir` goes into `X-Terraform-Get`, its `commit` and `source`
 * onto the status page and into the moved-tag check.
 */
export function parseRecord(bytes: Uint8Array): ModuleRecord | undefined {
  try {
    const r = JSON.parse(new TextDecoder().decode(bytes));
    if (
      r && typeof r.sha256 === "string" && /^[0-9a-f]{64}$/.test(r.sha256) &&
      Number.isSafeInteger(r.size) && r.size >= 0 &&
      typeof r.source === "string" && r.source.length <= 8192 && !CONTROL.test(r.source) &&
      typeof r.subdir === "string" && validSubdir(r.subdir) &&
      typeof r.fetchedAt === "number" &&
      (r.commit === undefined ||
        (typeof r.commit === "string" && /^[0-9a-f]{40}(?:[0-9a-f]{24})?$/.test(r.commit)))
    ) return r as ModuleRecord;
  } catch { /* not a record */ }
  return undefined;
}

/** Reads and writes module archives and records. */
export class ModuleStore {
  constructor(readonly storage: Storage) {}

  /** The record of a stored version, or undefined. */
  async record(m: ModuleRef, version: string): Promise<ModuleRecord | undefined> {
    const bytes = await this.storage.get(moduleKeys(m, version).record, 64 * 1024);
    return bytes ? parseRecord(bytes) : undefined;
  }

  /** Opens a stored version's archive (undefined when it has no record or no archive). */
  async open(
    m: ModuleRef,
    version: string,
  ): Promise<{ record: ModuleRecord; file: OpenObject } | undefined> {
    const record = await this.record(m, version);
    if (!record) return undefined;
    const file = await this.storage.open(moduleKeys(m, version).archive);
    if (!file) return undefined;
    if (file.size !== record.size) {
      file.close();
      return undefined;
    }
    return { record, file };
  }

  /** A fresh temp path for an archive being made. */
  tempPath(hint: string): string {
    return this.storage.tempPath(hint);
  }

  /**
   * Stores a finished archive (the temp file is consumed) and its record.
   * A version that is already stored is kept as it is: the first archive wins.
   */
  async commit(
    m: ModuleRef,
    version: string,
    temp: string,
    rec: ModuleRecord,
  ): Promise<ModuleRecord> {
    const had = await this.record(m, version);
    if (had) {
      await Deno.remove(temp).catch(() => {});
      return had;
    }
    const keys = moduleKeys(m, version);
    await this.storage.commit(temp, keys.archive);
    await this.storage.put(keys.record, JSON.stringify(rec) + "\n");
    return rec;
  }

  /** Every stored archive with its key facts. */
  async *list(): AsyncGenerator<{ module: ModuleRef; version: string; info: ObjectInfo }> {
    for await (const info of this.storage.list(MODULES_PREFIX)) {
      const k = parseModuleKey(info.key);
      if (k?.file === "archive") yield { module: k.module, version: k.version, info };
    }
  }

  /** Removes a version (record first, so nothing half-stored is ever served). */
  async delete(m: ModuleRef, version: string): Promise<void> {
    const keys = moduleKeys(m, version);
    await this.storage.delete(keys.record);
    await this.storage.delete(keys.archive);
  }
}
