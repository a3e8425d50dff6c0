/**
 * What `repoxy lock` locks: the provider requirements of a configuration
 * directory, gathered as `terraform providers lock` gathers them (the root
 * module's `*.tf` files, the child modules `terraform init`/`get` installed,
 * and the existing `.terraform.lock.hcl`), as one {@link LockRequest} per
 * provider.
 * @module
 */
import { join } from "../deps/path.ts";
import { readBounded } from "./tree_files.ts";
import {
  LockFileError,
  parseLockFile,
  TERRAFORM_LOCK_HEADER,
  TOFU_LOCK_HEADER,
} from "../protocol/lockfile.ts";
import { type ProviderRef, providerString } from "../protocol/names.ts";
import { ArgumentError, parseProviderAddress } from "../protocol/provider_address.ts";
import { type ProviderUse, readFileProviders } from "../protocol/tf_config.ts";
import {
  ConstraintError,
  type ConstraintTerm,
  parseConstraints,
  parseRequiredVersion,
} from "../protocol/version_constraints.ts";

/** Terraform's default registry for sources without a hostname. */
const DEFAULT_REGISTRY = "registry.terraform.io";

/**
 * Largest `.tf`, lock or `modules.json` file read: far beyond any real
 * configuration, and a link to `/dev/zero` or a FIFO is refused, not read
 * for ever.
 */
const MAX_INPUT_BYTES = 16 * 1024 * 1024;

/** A configuration file as text: a regular file (links followed) of bounded size. */
async function readInput(path: string): Promise<string> {
  return new TextDecoder().decode(
    await readBounded(path, MAX_INPUT_BYTES, { followLinks: true }),
  );
}

/** One provider to lock. */
export interface LockRequest {
  provider: ProviderRef;
  /** Constraint terms the version must meet (from the configuration or the old lock). */
  constraints: ConstraintTerm[];
  /** The version the old lock file pins; undefined: the newest the constraints allow. */
  lockedVersion?: string;
  /** Hashes the old lock file holds for `lockedVersion` (kept, as Terraform keeps them). */
  oldHashes: string[];
  /** Where the requirement came from (`file:line`), for messages. */
  source: string;
  /**
   * Locked, but not required by the configuration: written back exactly as
   * it was (`constraints` as written), as `terraform providers lock` does.
   */
  keep?: { constraints?: string };
}

/** Requirements of a directory: its lock file and its `*.tf` files. */
export interface DirRequirements {
  requests: LockRequest[];
  /** The header of the old lock file (Terraform's or OpenTofu's). */
  header: string;
  /** The old lock file's text, if there is one. */
  oldText?: string;
}

/**
 * Reads what DIR requires, as `terraform providers lock` gathers it: the
 * `required_providers` of its `*.tf` files and of the child modules
 * `terraform init`/`get` installed (their constraints add up), providers
 * blocks use without declaring them (`hashicorp/<name>`), and its
 * `.terraform.lock.hcl` (locked versions and hashes; constraints for
 * providers no `.tf` file names). At least one `.tf` file or the lock file
 * must exist.
 * @throws {ArgumentError | LockFileError | TfConfigError | ConstraintError}
 */
export async function readDirRequirements(dir: string): Promise<DirRequirements> {
  const lockPath = join(dir, ".terraform.lock.hcl");
  let oldText: string | undefined;
  try {
    oldText = await readInput(lockPath);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) {
      throw new LockFileError(`cannot read lock file "${lockPath}": ${(e as Error).message}`);
    }
  }
  const tfFiles = await listTfFiles(dir);
  if (oldText === undefined && tfFiles.length === 0) {
    throw new ArgumentError(`"${dir}" has neither a .terraform.lock.hcl nor any *.tf file`);
  }

  // Requirements of the configuration: the root module and the modules
  // "terraform init" (or "terraform get") installed, merged per provider
  // (their terms add up, as Terraform combines every module's constraints).
  const fromConfig = new Map<string, LockRequest>();
  const add = (provider: ProviderRef, terms: ConstraintTerm[], where: string) => {
    const key = providerString(provider);
    const prev = fromConfig.get(key);
    if (prev) prev.constraints.push(...terms);
    else fromConfig.set(key, { provider, constraints: terms, oldHashes: [], source: where });
  };
  for (const moduleDir of [dir, ...await installedModuleDirs(dir)]) {
    const files = moduleDir === dir ? tfFiles : await listTfFiles(moduleDir);
    const declared = new Set<string>();
    const used: ProviderUse[] = [];
    for (const f of files) {
      const path = join(moduleDir, f);
      let text: string;
      try {
        text = await readInput(path);
      } catch (e) {
        // A dangling symlink, a directory by that name: named, as terraform names it.
        throw new ArgumentError(`cannot read "${path}": ${(e as Error).message}`);
      }
      const found = readFileProviders(text, path);
      used.push(...found.used);
      for (const req of found.required) {
        declared.add(req.localName);
        let source = req.source ?? `hashicorp/${req.localName}`;
        // A one-part source is a type in the hashicorp namespace, as Terraform reads it.
        if (!source.includes("/")) source = `hashicorp/${source}`;
        let provider: ProviderRef;
        try {
          provider = parseProviderAddress(source, DEFAULT_REGISTRY).provider;
        } catch (e) {
          throw new ArgumentError(`${req.where}: ${(e as ArgumentError).message}`);
        }
        let terms: ConstraintTerm[];
        try {
          terms = req.version === undefined ? [] : parseRequiredVersion(req.version);
        } catch (e) {
          throw new ConstraintError(`${req.where}: ${(e as Error).message}`);
        }
        add(provider, terms, req.where);
      }
    }
    // Blocks using a provider the module does not declare imply
    // hashicorp/<name>; "terraform" is the built-in provider, never locked.
    for (const u of used) {
      if (declared.has(u.localName) || u.localName === "terraform") continue;
      let provider: ProviderRef;
      try {
        provider = parseProviderAddress(`hashicorp/${u.localName}`, DEFAULT_REGISTRY).provider;
      } catch (e) {
        throw new ArgumentError(`${u.where}: ${(e as ArgumentError).message}`);
      }
      add(provider, [], u.where);
    }
  }

  const requests = new Map(fromConfig);
  let header = TERRAFORM_LOCK_HEADER;
  if (oldText !== undefined) {
    if (oldText.startsWith(TOFU_LOCK_HEADER)) header = TOFU_LOCK_HEADER;
    for (const lp of parseLockFile(oldText, lockPath, DEFAULT_REGISTRY)) {
      const key = providerString(lp.provider);
      const req = requests.get(key);
      if (req) {
        req.lockedVersion = lp.version!;
        req.oldHashes = lp.hashes;
      } else {
        let terms: ConstraintTerm[];
        try {
          terms = parseConstraints(lp.constraints ?? "");
        } catch (e) {
          throw new LockFileError(`${lockPath}:${lp.line}: ${(e as Error).message}`);
        }
        const lone: LockRequest = {
          provider: lp.provider,
          constraints: terms,
          lockedVersion: lp.version!,
          oldHashes: lp.hashes,
          source: `${lockPath}:${lp.line}`,
        };
        // With a configuration, a provider it does not require stays as it
        // is (terraform providers lock leaves it; terraform init drops it).
        if (tfFiles.length > 0) {
          lone.keep = lp.constraints === undefined ? {} : { constraints: lp.constraints };
        }
        requests.set(key, lone);
      }
    }
  }
  const out: DirRequirements = { requests: [...requests.values()], header };
  if (oldText !== undefined) out.oldText = oldText;
  return out;
}

/** Names of the `*.tf` files of a directory, sorted. */
async function listTfFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) {
      // As terraform lists them: everything but directories (a FIFO or a
      // device named *.tf is then refused by name when read, not skipped).
      if (!e.isDirectory && e.name.endsWith(".tf")) out.push(e.name);
    }
  } catch (e) {
    throw new ArgumentError(`cannot read directory "${dir}": ${(e as Error).message}`);
  }
  return out.sort();
}

/**
 * Directories of the child modules `terraform init` / `terraform get`
 * installed (`.terraform/modules/modules.json`, or under `TF_DATA_DIR`),
 * relative to `dir` as Terraform records them. None when nothing was
 * installed.
 */
async function installedModuleDirs(dir: string): Promise<string[]> {
  // Terraform keeps its working data in TF_DATA_DIR when that is set.
  let dataDir = ".terraform";
  try {
    dataDir = Deno.env.get("TF_DATA_DIR") || dataDir;
  } catch { /* no env permission: the default */ }
  const manifest = join(dir, dataDir, "modules", "modules.json");
  let text: string;
  try {
    text = await readInput(manifest);
  } catch {
    return [];
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new ArgumentError(`${manifest}: not JSON: ${(e as Error).message}`);
  }
  // Terraform wrote it, but anything may have since: a wrong shape is named, not a crash.
  const list = typeof doc === "object" && doc !== null && !Array.isArray(doc)
    ? (doc as { Modules?: unknown }).Modules ?? []
    : undefined;
  if (!Array.isArray(list) || list.some((m) => typeof m !== "object" || m === null)) {
    throw new ArgumentError(`${manifest}: not a module manifest ({"Modules": [{...}, ...]})`);
  }
  const dirs = new Set<string>();
  for (const m of list as Array<{ Key?: unknown; Dir?: unknown }>) {
    if (m.Key === "" || typeof m.Dir !== "string") continue; // the root module
    const d = join(dir, m.Dir);
    if (d !== join(dir, ".")) dirs.add(d);
  }
  return [...dirs].sort();
}
