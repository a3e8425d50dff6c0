/**
 * Reads the provider requirements of a Terraform configuration: the
 * `required_providers` entries inside top-level `terraform { }` blocks of
 * `*.tf` files.
 *
 * A small subset reader, not an HCL evaluator: it scans the whole file with
 * HCL's lexical rules (`hcl_lexer.ts`: comments, strings with `${...}`
 * templates, heredocs; then brackets) so nothing elsewhere in the file can
 * confuse it, and reads only literal strings for `source` and `version`.
 * Everything else in the file (resources, expressions,
 * `configuration_aliases`) is skipped, not judged.
 * @module
 */
import { type HclLexOptions, type HclToken, lexHcl } from "./hcl_lexer.ts";

/** One `required_providers` entry. */
export interface ProviderRequirement {
  /** The local name (`aws` in `aws = { ... }`). */
  localName: string;
  /** `source` as written, or undefined (then `hashicorp/<localName>`). */
  source?: string;
  /** `version` as written, or undefined. */
  version?: string;
  /** `file:line` of the entry, for messages. */
  where: string;
}

/** A configuration file the reader cannot make sense of. */
export class TfConfigError extends Error {
  override name = "TfConfigError";
}

/** A configuration is full of expressions: templates and heredocs are skipped, not refused. */
const SKIM: HclLexOptions = { templates: "skip", heredocs: "skip", strict: false };

const OPEN: Record<string, string> = { "{": "}", "[": "]", "(": ")" };

/** A provider a module uses without declaring it: Terraform implies `hashicorp/<localName>`. */
export interface ProviderUse {
  localName: string;
  /** `file:line` of the block, for messages. */
  where: string;
}

/** What one `.tf` file says about providers. */
export interface FileProviders {
  required: ProviderRequirement[];
  /**
   * Local names the file's `resource`, `data`, `ephemeral` and `provider`
   * blocks use (a resource's `provider` argument, else its type's prefix).
   */
  used: ProviderUse[];
}

/**
 * Reads the `required_providers` entries of one `.tf` file.
 * @param name the file name, for messages
 * @throws {TfConfigError} for unbalanced brackets or a `source`/`version`
 *   that is not a literal string
 */
export function readRequiredProviders(text: string, name: string): ProviderRequirement[] {
  return readFileProviders(text, name).required;
}

/**
 * Reads what one `.tf` file says about providers: its `required_providers`
 * entries and the local names its blocks use.
 * @param name the file name, for messages
 * @throws {TfConfigError} as {@link readRequiredProviders}
 */
export function readFileProviders(text: string, name: string): FileProviders {
  const toks = lexHcl(text, SKIM, (line, msg) => {
    throw new TfConfigError(`${name}:${line}: ${msg}`);
  });
  const out: ProviderRequirement[] = [];
  const isPunct = (t: HclToken | undefined, v: string) => t?.kind === "punct" && t.value === v;

  /** From an opening bracket at `pos`, returns the index of its closing one. */
  const matching = (from: number): number => {
    const stack: string[] = [];
    for (let k = from; k < toks.length; k++) {
      const t = toks[k]!;
      if (t.kind !== "punct") continue;
      if (t.value in OPEN) stack.push(OPEN[t.value]!);
      else if (t.value === "}" || t.value === "]" || t.value === ")") {
        if (stack.pop() !== t.value) {
          throw new TfConfigError(`${name}:${t.line}: unbalanced "${t.value}"`);
        }
        if (stack.length === 0) return k;
      }
    }
    throw new TfConfigError(`${name}:${toks[from]!.line}: "${toks[from]!.value}" is never closed`);
  };

  /** Block header at `k` (`ident labels... {`): the index of its `{`, or -1. */
  const blockOpen = (k: number): number => {
    let j = k + 1;
    while (toks[j]?.kind === "ident" || toks[j]?.kind === "string") j++;
    return isPunct(toks[j], "{") ? j : -1;
  };

  /** Reads `key = "literal"` pairs at the top level of the object between `a` and `b`. */
  const literalAttrs = (a: number, b: number): Map<string, { value: string; line: number }> => {
    const attrs = new Map<string, { value: string; line: number }>();
    for (let k = a + 1; k < b; k++) {
      const t = toks[k]!;
      if (t.kind === "punct" && t.value in OPEN) {
        k = matching(k);
        continue;
      }
      if (
        (t.kind === "ident" || t.kind === "string") &&
        (isPunct(toks[k + 1], "=") || isPunct(toks[k + 1], ":"))
      ) {
        const v = toks[k + 2];
        if (t.value === "source" || t.value === "version") {
          if (v?.kind !== "string") {
            throw new TfConfigError(
              `${name}:${t.line}: "${t.value}" in required_providers must be a literal string`,
            );
          }
          attrs.set(t.value, { value: v.value, line: t.line });
        }
        k += 1;
      }
    }
    return attrs;
  };

  const requiredProviders = (a: number, b: number) => {
    for (let k = a + 1; k < b; k++) {
      const t = toks[k]!;
      if (t.kind === "nl" || isPunct(t, ",")) continue;
      if (t.kind === "ident" && isPunct(toks[k + 1], "=")) {
        const v = toks[k + 2];
        if (v?.kind === "string") {
          // Terraform 0.12 form: `aws = "~> 1.0"`.
          out.push({ localName: t.value, version: v.value, where: `${name}:${t.line}` });
          k += 2;
          continue;
        }
        if (isPunct(v, "{")) {
          const end = matching(k + 2);
          const attrs = literalAttrs(k + 2, end);
          const req: ProviderRequirement = { localName: t.value, where: `${name}:${t.line}` };
          const source = attrs.get("source");
          const version = attrs.get("version");
          if (source) req.source = source.value;
          if (version) req.version = version.value;
          out.push(req);
          k = end;
          continue;
        }
        throw new TfConfigError(
          `${name}:${t.line}: required_providers entry "${t.value}" must be an object or a string`,
        );
      }
      throw new TfConfigError(`${name}:${t.line}: unexpected "${t.value}" in required_providers`);
    }
  };

  const used: ProviderUse[] = [];
  /** The local name a resource block's `provider = NAME[.ALIAS]` argument names, if any. */
  const providerArgument = (a: number, b: number): string | undefined => {
    for (let k = a + 1; k < b; k++) {
      const u = toks[k]!;
      if (u.kind === "punct" && u.value in OPEN) {
        k = matching(k);
        continue;
      }
      if (
        u.kind === "ident" && u.value === "provider" && isPunct(toks[k + 1], "=") &&
        toks[k + 2]?.kind === "ident" && (k === a + 1 || toks[k - 1]!.kind === "nl")
      ) {
        return toks[k + 2]!.value;
      }
    }
    return undefined;
  };

  /** Walks the blocks between token indexes `from` and `to` (a file, or a `check` body). */
  const walk = (from: number, to: number, top: boolean) => {
    let pos = from;
    while (pos < to) {
      const t = toks[pos]!;
      if (t.kind === "punct" && t.value in OPEN) {
        pos = matching(pos) + 1;
        continue;
      }
      if (
        t.kind === "ident" &&
        (t.value === "data" ||
          (top && (t.value === "resource" || t.value === "ephemeral" || t.value === "provider"))) &&
        toks[pos + 1]?.kind === "string"
      ) {
        const open = blockOpen(pos);
        if (open > pos) {
          const end = matching(open);
          const label = toks[pos + 1]!.value;
          const where = `${name}:${t.line}`;
          if (t.value === "provider") used.push({ localName: label, where });
          else {
            // A resource type's provider is the part before its first "_",
            // unless the block names one (`provider = google-beta`).
            const local = providerArgument(open, end) ?? label.split("_")[0]!;
            if (local !== "") used.push({ localName: local, where });
          }
          pos = end + 1;
          continue;
        }
      }
      // `check` blocks (Terraform 1.5) may hold scoped data sources.
      if (top && t.kind === "ident" && t.value === "check" && toks[pos + 1]?.kind === "string") {
        const open = blockOpen(pos);
        if (open > pos) {
          const end = matching(open);
          walk(open + 1, end, false);
          pos = end + 1;
          continue;
        }
      }
      if (top && t.kind === "ident" && t.value === "terraform") {
        const open = blockOpen(pos);
        if (open === pos + 1) {
          const end = matching(open);
          for (let k = open + 1; k < end; k++) {
            const u = toks[k]!;
            if (u.kind === "punct" && u.value in OPEN) {
              k = matching(k);
              continue;
            }
            if (
              u.kind === "ident" && u.value === "required_providers" && isPunct(toks[k + 1], "{")
            ) {
              const rEnd = matching(k + 1);
              requiredProviders(k + 1, rEnd);
              k = rEnd;
            }
          }
          pos = end + 1;
          continue;
        }
      }
      pos++;
    }
  };
  walk(0, toks.length, true);
  return { required: out, used };
}
