/**
 * Reads Terraform / OpenTofu dependency lock files (`.terraform.lock.hcl`).
 *
 * Lock files are machine-written HCL with a small shape:
 *
 * ```hcl
 * provider "registry.terraform.io/hashicorp/aws" {
 *   version     = "5.31.0"
 *   constraints = "~> 5.0"
 *   hashes = [
 *     "h1:...",
 *     "zh:...",
 *   ]
 * }
 * ```
 *
 * so this is a purpose-built parser for HCL's block/attribute structure with
 * literal values (strings, numbers, booleans, lists, objects) and comments; it
 * refuses expressions and templates instead of guessing at them.
 * @module
 */
import { type HclLexOptions, lexHcl } from "./hcl_lexer.ts";
import { parseProviderAddress, type ProviderTarget } from "./provider_address.ts";

/** One `provider` block of a lock file. */
export interface LockedProvider extends ProviderTarget {
  /** The address exactly as written. */
  address: string;
  constraints?: string;
  /** `h1:` and `zh:` hashes (and any other scheme) as written. */
  hashes: string[];
  /** 1-based line of the block, for messages. */
  line: number;
}

/** A lock file that cannot be read; the message names the file and line. */
export class LockFileError extends Error {
  override name = "LockFileError";
}

/** A literal HCL value. */
type Value = string | number | boolean | null | Value[] | { [k: string]: Value };
interface Attr {
  v: Value;
  line: number;
}
interface Block {
  type: string;
  labels: string[];
  line: number;
  attrs: Map<string, Attr>;
}

/** Lock files hold literals only: templates and heredocs are refused, not skipped. */
const LITERALS_ONLY: HclLexOptions = {
  templates: { refuse: "template sequences are not supported in lock files" },
  heredocs: { refuse: "heredoc strings are not supported in lock files" },
  strict: true,
};

/** Deepest nesting of blocks, lists and objects a lock file may have. */
const MAX_NESTING = 32;

/**
 * Parses the text of a lock file.
 *
 * @param name used in error messages (the file path)
 * @param defaultHost registry for addresses without a hostname (lock files always have one)
 * @throws {LockFileError} for syntax errors and provider blocks that make no sense
 */
export function parseLockFile(text: string, name: string, defaultHost: string): LockedProvider[] {
  const fail = (line: number, msg: string): never => {
    throw new LockFileError(`${name}:${line}: ${msg}`);
  };
  const tokens = lexHcl(text, LITERALS_ONLY, fail).filter((t) => t.kind !== "nl");
  let pos = 0;
  const peek = () => tokens[pos]!;
  const next = () => tokens[pos++]!;
  const expect = (value: string) => {
    const t = next();
    if (t.kind !== "punct" || t.value !== value) {
      fail(
        t.line,
        `expected "${value}", found ${t.kind === "eof" ? "end of file" : `"${t.value}"`}`,
      );
    }
  };

  // Terraform's lock files nest two deep; a hostile one must not overflow the stack.
  let depth = 0;
  const enter = (line: number) => {
    if (++depth > MAX_NESTING) fail(line, `nested more than ${MAX_NESTING} deep`);
  };

  function value(): Value {
    const t = next();
    if (t.kind === "string") return t.value;
    if (t.kind === "number") return Number(t.value);
    if (t.kind === "ident") {
      if (t.value === "true") return true;
      if (t.value === "false") return false;
      if (t.value === "null") return null;
      return fail(t.line, `expressions are not supported in lock files ("${t.value}")`);
    }
    if (t.kind === "punct" && t.value === "[") {
      enter(t.line);
      const items: Value[] = [];
      while (!(peek().kind === "punct" && peek().value === "]")) {
        items.push(value());
        if (peek().kind === "punct" && peek().value === ",") next();
        else break;
      }
      expect("]");
      depth--;
      return items;
    }
    if (t.kind === "punct" && t.value === "{") {
      enter(t.line);
      const obj: Record<string, Value> = {};
      while (!(peek().kind === "punct" && peek().value === "}")) {
        const k = next();
        if (k.kind !== "ident" && k.kind !== "string") fail(k.line, "expected an object key");
        const sep = next();
        if (sep.kind !== "punct" || (sep.value !== "=" && sep.value !== ":")) {
          fail(sep.line, `expected "=" after "${k.value}"`);
        }
        obj[k.value] = value();
        if (peek().kind === "punct" && peek().value === ",") next();
      }
      expect("}");
      depth--;
      return obj;
    }
    return fail(t.line, `unexpected ${t.kind === "eof" ? "end of file" : `"${t.value}"`}`);
  }

  /** Parses a block or attribute body up to `}` (or end of file at top level). */
  function body(top: boolean): { attrs: Map<string, Attr>; blocks: Block[] } {
    const attrs = new Map<string, Attr>();
    const blocks: Block[] = [];
    while (true) {
      const t = peek();
      if (t.kind === "eof") {
        if (!top) fail(t.line, `expected "}", found end of file`);
        break;
      }
      if (!top && t.kind === "punct" && t.value === "}") break;
      if (t.kind !== "ident") fail(t.line, `expected an attribute or block, found "${t.value}"`);
      next();
      const after = peek();
      if (after.kind === "punct" && after.value === "=") {
        next();
        if (attrs.has(t.value)) fail(t.line, `attribute "${t.value}" is set twice`);
        attrs.set(t.value, { v: value(), line: t.line });
        continue;
      }
      const labels: string[] = [];
      while (peek().kind === "string" || peek().kind === "ident") labels.push(next().value);
      expect("{");
      enter(t.line);
      const inner = body(false);
      expect("}");
      depth--;
      blocks.push({ type: t.value, labels, line: t.line, attrs: inner.attrs });
    }
    return { attrs, blocks };
  }

  const out: LockedProvider[] = [];
  const seen = new Set<string>();
  for (const b of body(true).blocks) {
    if (b.type !== "provider") continue; // e.g. future block types: not ours to judge
    const address = b.labels[0];
    if (b.labels.length !== 1 || address === undefined) {
      fail(b.line, `a provider block needs exactly one label (the provider address)`);
    }
    let target: ProviderTarget;
    try {
      target = parseProviderAddress(address!, defaultHost);
    } catch (e) {
      return fail(b.line, (e as Error).message);
    }
    if (target.version !== undefined) fail(b.line, `"${address}" is not a provider address`);
    const key = `${target.provider.hostname}/${target.provider.namespace}/${target.provider.type}`;
    if (seen.has(key)) fail(b.line, `provider "${key}" is listed twice`);
    seen.add(key);
    const str = (name: string): string | undefined => {
      const a = b.attrs.get(name);
      if (a === undefined) return undefined;
      if (typeof a.v !== "string") fail(a.line, `"${name}" must be a string`);
      return a.v as string;
    };
    const version = str("version");
    if (version === undefined) fail(b.line, `provider "${key}" has no version`);
    const withVersion = (() => {
      try {
        return parseProviderAddress(`${key}@${version}`, defaultHost);
      } catch (e) {
        return fail(b.attrs.get("version")!.line, (e as Error).message);
      }
    })();
    const hashesAttr = b.attrs.get("hashes");
    const hashes: string[] = [];
    if (hashesAttr) {
      if (!Array.isArray(hashesAttr.v) || hashesAttr.v.some((h) => typeof h !== "string")) {
        fail(hashesAttr.line, `"hashes" must be a list of strings`);
      }
      hashes.push(...hashesAttr.v as string[]);
    }
    const entry: LockedProvider = { ...withVersion, address: address!, hashes, line: b.line };
    const constraints = str("constraints");
    if (constraints !== undefined) entry.constraints = constraints;
    out.push(entry);
  }
  return out;
}

/**
 * Reads and parses a lock file from disk.
 * @throws {LockFileError} also when the file cannot be read
 */
export async function readLockFile(path: string, defaultHost: string): Promise<LockedProvider[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new LockFileError(`cannot read lock file "${path}": ${(e as Error).message}`);
  }
  return parseLockFile(text, path, defaultHost);
}

/** What {@link formatLockFile} writes for one provider. */
export interface LockEntry {
  provider: ProviderTarget["provider"];
  version: string;
  /** Normalized constraints (empty or undefined: no `constraints` line). */
  constraints?: string;
  hashes: string[];
}

/** The header `terraform init` writes; OpenTofu's names `tofu init`. */
export const TERRAFORM_LOCK_HEADER = `# This file is maintained automatically by "terraform init".
# Manual edits may be lost in future updates.
`;

/** OpenTofu's header, kept when rewriting a lock file it made. */
export const TOFU_LOCK_HEADER = `# This file is maintained automatically by "tofu init".
# Manual edits may be lost in future updates.
`;

function hclString(s: string): string {
  // hclwrite's escaping: quotes, backslashes, control characters, and the
  // template openers doubled so they stay literal.
  return `"${
    s.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n").replace(/\r/g, "\\r")
      .replace(/\t/g, "\\t").replace(/\$\{/g, "$${").replace(/%\{/g, "%%{")
  }"`;
}

function compareProviders(a: LockEntry["provider"], b: LockEntry["provider"]): number {
  for (const k of ["hostname", "namespace", "type"] as const) {
    if (a[k] !== b[k]) return a[k] < b[k] ? -1 : 1;
  }
  return 0;
}

/**
 * Writes a lock file the way Terraform's `depsfile.SaveLocksToBytes` does
 * (hclwrite formatting): the header, then one block per provider sorted by
 * hostname, namespace and type, each `version`, `constraints` (aligned with
 * `version` when present) and the hashes de-duplicated, sorted as strings,
 * one per line with a trailing comma.
 */
export function formatLockFile(entries: LockEntry[], header = TERRAFORM_LOCK_HEADER): string {
  let out = header;
  for (const e of [...entries].sort((a, b) => compareProviders(a.provider, b.provider))) {
    const p = e.provider;
    out += `\nprovider ${hclString(`${p.hostname}/${p.namespace}/${p.type}`)} {\n`;
    if (e.constraints) {
      out += `  version     = ${hclString(e.version)}\n`;
      out += `  constraints = ${hclString(e.constraints)}\n`;
    } else {
      out += `  version = ${hclString(e.version)}\n`;
    }
    const hashes = [...new Set(e.hashes)].sort((a, b) => a < b ? -1 : a > b ? 1 : 0);
    if (hashes.length > 0) {
      out += `  hashes = [\n`;
      for (const h of hashes) out += `    ${hclString(h)},\n`;
      out += `  ]\n`;
    }
    out += `}\n`;
  }
  return out;
}
