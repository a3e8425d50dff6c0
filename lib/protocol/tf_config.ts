/**
 * Reads the provider requirements of a Terraform configuration: the
 * `required_providers` entries inside top-level `terraform { }` blocks of
 * `*.tf` files.
 *
 * A small subset reader, not an HCL evaluator: it scans the whole file with
 * HCL's lexical rules (comments, strings with `${...}` templates, heredocs,
 * brackets) so nothing elsewhere in the file can confuse it, and reads only
 * literal strings for `source` and `version`. Everything else in the file
 * (resources, expressions, `configuration_aliases`) is skipped, not judged.
 * @module
 */

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

interface Tok {
  kind: "ident" | "string" | "template" | "punct" | "nl" | "other";
  value: string;
  line: number;
}

function lex(text: string, name: string): Tok[] {
  const toks: Tok[] = [];
  let i = 0;
  let line = 1;
  const fail = (msg: string): never => {
    throw new TfConfigError(`${name}:${line}: ${msg}`);
  };
  /** Skips a quoted string starting after its opening quote; returns its literal text. */
  const quoted = (): { value: string; template: boolean } => {
    let s = "";
    let template = false;
    while (true) {
      if (i >= text.length || text[i] === "\n") fail("unterminated string");
      const c = text[i]!;
      if (c === '"') {
        i++;
        return { value: s, template };
      }
      if (c === "\\") {
        const e = text[i + 1] ?? "";
        const simple: Record<string, string> = { n: "\n", r: "\r", t: "\t", '"': '"', "\\": "\\" };
        if (e in simple) {
          s += simple[e];
          i += 2;
        } else if (e === "u" || e === "U") {
          const len = e === "u" ? 4 : 8;
          const hex = text.slice(i + 2, i + 2 + len);
          if (!/^[0-9a-fA-F]+$/.test(hex) || hex.length !== len) fail("bad \\u escape");
          s += String.fromCodePoint(parseInt(hex, 16));
          i += 2 + len;
        } else fail(`unknown escape "\\${e}"`);
      } else if ((c === "$" || c === "%") && text[i + 1] === c && text[i + 2] === "{") {
        s += c + "{";
        i += 3;
      } else if ((c === "$" || c === "%") && text[i + 1] === "{") {
        template = true;
        i += 2;
        skipTemplate();
      } else {
        s += c;
        i++;
      }
    }
  };
  /** Skips a `${ ... }` interpolation (after its `${`), strings inside included. */
  const skipTemplate = () => {
    let depth = 1;
    while (depth > 0) {
      if (i >= text.length) fail("unterminated template");
      const c = text[i]!;
      if (c === "\n") line++;
      if (c === '"') {
        i++;
        quoted();
        continue;
      }
      if (c === "{") depth++;
      if (c === "}") depth--;
      i++;
    }
  };
  while (i < text.length) {
    const c = text[i]!;
    if (c === "\n") {
      toks.push({ kind: "nl", value: "\n", line });
      line++;
      i++;
    } else if (c === " " || c === "\t" || c === "\r" || c === "\ufeff") {
      i++;
    } else if (c === "#" || (c === "/" && text[i + 1] === "/")) {
      while (i < text.length && text[i] !== "\n") i++;
    } else if (c === "/" && text[i + 1] === "*") {
      const end = text.indexOf("*/", i + 2);
      if (end < 0) fail("unterminated /* comment");
      for (let j = i; j < end; j++) if (text[j] === "\n") line++;
      i = end + 2;
    } else if (c === '"') {
      const start = line;
      i++;
      const q = quoted();
      toks.push({ kind: q.template ? "template" : "string", value: q.value, line: start });
    } else if (c === "<" && text[i + 1] === "<" && /^<<-?[A-Za-z_]/.test(text.slice(i, i + 4))) {
      // Heredoc: skip to the line holding only its delimiter.
      const m = /^<<-?([A-Za-z_][A-Za-z0-9_-]*)\r?\n/.exec(text.slice(i));
      if (!m) fail("malformed heredoc");
      const start = line;
      i += m![0].length;
      line++;
      while (true) {
        if (i >= text.length) fail(`heredoc from line ${start} is not terminated`);
        const eol = text.indexOf("\n", i);
        const lineText = text.slice(i, eol < 0 ? text.length : eol).replace(/\r$/, "");
        i = eol < 0 ? text.length : eol;
        if (lineText.trim() === m![1]) break;
        if (eol >= 0) {
          i++;
          line++;
        }
      }
      toks.push({ kind: "template", value: "", line: start });
    } else if (/[A-Za-z_]/.test(c)) {
      let j = i + 1;
      while (j < text.length && /[A-Za-z0-9_-]/.test(text[j]!)) j++;
      toks.push({ kind: "ident", value: text.slice(i, j), line });
      i = j;
    } else if ("{}[]()=,:".includes(c)) {
      toks.push({ kind: "punct", value: c, line });
      i++;
    } else {
      toks.push({ kind: "other", value: c, line });
      i++;
    }
  }
  return toks;
}

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
  const toks = lex(text, name);
  const out: ProviderRequirement[] = [];
  const isPunct = (t: Tok | undefined, v: string) => t?.kind === "punct" && t.value === v;

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
