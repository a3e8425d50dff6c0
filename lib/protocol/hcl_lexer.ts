/**
 * HCL's lexical rules, shared by the lock file reader (`lockfile.ts`) and the
 * `*.tf` reader (`tf_config.ts`): whitespace and a byte order mark, `#`, `//`
 * and `/* *\/` comments, quoted strings with HCL's escapes, identifiers,
 * numbers and punctuation, each token with its 1-based line.
 *
 * What the two readers do differently is the caller's choice
 * ({@link HclLexOptions}): a lock file holds literals only, so it refuses
 * templates and heredocs; a configuration is full of them, so its reader skips
 * them and marks what it skipped.
 * @module
 */

/** One token; a string's `line` is the line of its opening quote. */
export interface HclToken {
  /**
   * `template`: a quoted string with `${ }`/`%{ }` sequences (`value`: the
   * literal text around them) or a heredoc (`value` empty), when those are
   * skipped. `nl`: a newline. `number`: only when `strict`. `other`: one
   * character that is none of the above (digits included) when not `strict`.
   * `eof`: always last.
   */
  kind: "ident" | "string" | "template" | "number" | "punct" | "nl" | "other" | "eof";
  value: string;
  line: number;
}

/** What the lexer does with the parts of HCL that are more than literals. */
export interface HclLexOptions {
  /**
   * `${` and `%{` in a quoted string: refused with this message at their
   * line, or `"skip"`ped (the whole interpolation, strings inside included)
   * and the string returned as a `template` token.
   */
  templates: "skip" | { refuse: string };
  /**
   * `<<`: refused with this message at its line, or, when it starts a heredoc
   * (`<<EOT`, `<<-EOT`), `"skip"`ped to its closing delimiter and returned as a
   * `template` token (any other `<` is then an `other` token).
   */
  heredocs: "skip" | { refuse: string };
  /**
   * true: numbers are `number` tokens and any character outside HCL's tokens
   * is refused (`unexpected character`); false: each such character, digits
   * included, is an `other` token.
   */
  strict: boolean;
}

/**
 * Splits `text` into tokens, newlines included (callers that do not care
 * about them filter them out).
 * @param fail called with the line and message of a lexical error; it throws
 *   the caller's error type
 */
export function lexHcl(
  text: string,
  options: HclLexOptions,
  fail: (line: number, msg: string) => never,
): HclToken[] {
  const toks: HclToken[] = [];
  let i = 0;
  let line = 1;
  /** Skips a quoted string starting after its opening quote; returns its literal text. */
  const quoted = (): { value: string; template: boolean } => {
    let s = "";
    let template = false;
    while (true) {
      if (i >= text.length || text[i] === "\n") fail(line, "unterminated string");
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
          if (!/^[0-9a-fA-F]+$/.test(hex) || hex.length !== len) fail(line, "bad \\u escape");
          s += String.fromCodePoint(parseInt(hex, 16));
          i += 2 + len;
        } else fail(line, `unknown escape "\\${e}"`);
      } else if ((c === "$" || c === "%") && text[i + 1] === c && text[i + 2] === "{") {
        s += c + "{"; // $${ and %%{ are escaped literals
        i += 3;
      } else if ((c === "$" || c === "%") && text[i + 1] === "{") {
        if (options.templates !== "skip") fail(line, options.templates.refuse);
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
      if (i >= text.length) fail(line, "unterminated template");
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
      if (end < 0) fail(line, "unterminated /* comment");
      for (let j = i; j < end; j++) if (text[j] === "\n") line++;
      i = end + 2;
    } else if (c === '"') {
      const start = line;
      i++;
      const q = quoted();
      toks.push({ kind: q.template ? "template" : "string", value: q.value, line: start });
    } else if (c === "<" && text[i + 1] === "<" && options.heredocs !== "skip") {
      fail(line, options.heredocs.refuse);
    } else if (c === "<" && text[i + 1] === "<" && /^<<-?[A-Za-z_]/.test(text.slice(i, i + 4))) {
      // Heredoc: skip to the line holding only its delimiter.
      const m = /^<<-?([A-Za-z_][A-Za-z0-9_-]*)\r?\n/.exec(text.slice(i));
      if (!m) fail(line, "malformed heredoc");
      const start = line;
      i += m![0].length;
      line++;
      while (true) {
        if (i >= text.length) fail(line, `heredoc from line ${start} is not terminated`);
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
    } else if (options.strict && /[0-9]/.test(c)) {
      const m = /^[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/.exec(text.slice(i))!;
      toks.push({ kind: "number", value: m[0], line });
      i += m[0].length;
    } else if ("{}[]=,:.()".includes(c)) {
      toks.push({ kind: "punct", value: c, line });
      i++;
    } else if (options.strict) {
      fail(line, `unexpected character "${c}"`);
    } else if (c < " " || c === "\x7f") {
      // No HCL token holds a control character: terraform refuses the file.
      fail(line, `invalid character U+${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
    } else {
      toks.push({ kind: "other", value: c, line });
      i++;
    }
  }
  toks.push({ kind: "eof", value: "", line });
  return toks;
}
