/**
 * Config errors: every problem named by its key path (`limits.archiveSize`,
 * `auth.tokens[0].name`), or by the flag or `REPOXY_*` variable the value
 * came from, so an operator knows which line to fix.
 * @module
 */
import type * as v from "../deps/valibot.ts";

/** A configuration problem: start-up stops with exit code 2 and this message. */
export class ConfigError extends Error {
  override name = "ConfigError";
  /** Every problem found, one line each; `message` is them joined by newlines. */
  readonly problems: readonly string[];
  constructor(problems: string | readonly string[]) {
    const list = typeof problems === "string" ? [problems] : problems;
    super(list.join("\n"));
    this.problems = list;
  }
}

/** Where overridden values came from: key path → `--listen` or `REPOXY_LISTEN`. */
export type Origins = ReadonlyMap<string, string>;

/** `limits.archiveSize`, `auth.tokens[0].name` from a valibot issue path. */
export function keyPath(path: readonly { key: unknown }[] | undefined): string {
  let out = "";
  for (const item of path ?? []) {
    const k = item.key;
    out += typeof k === "number" ? `[${k}]` : out === "" ? String(k) : `.${String(k)}`;
  }
  return out;
}

/** One line for one issue: `"listen" must be HOST:PORT …`, `unknown key "tls.crt" (known: …)`. */
export function describeIssue(
  issue: v.BaseIssue<unknown>,
  origins: Origins = new Map(),
): string {
  const path = keyPath(issue.path as { key: unknown }[] | undefined);
  const name = origins.get(path) ?? path;
  if (issue.type === "strict_object" && issue.expected === "never") {
    return `unknown key "${name}" (${issue.message})`;
  }
  if (path === "") {
    return `the config ${issue.message.replace(/^must be an object/, "must be a JSON object")}`;
  }
  return `"${name}" ${issue.message}`;
}

/**
 * JSON.parse's message for `text` without the quote of the text V8 puts in
 * some (`Unexpected token 's', ..."urlKey": supersecre"... is not valid
 * JSON`): a literal secret next to a typo would be printed in part. The
 * quote is turned into the line it is on; positions are kept as they are.
 */
export function jsonSyntaxMessage(text: string, message: string): string {
  const m = /^(.*?), (\.\.\.)?"(.*)"(?:\.\.\.)? is not valid JSON$/s.exec(message);
  if (!m) return message;
  const what = m[1]!.replace(/ '.*'$/s, "");
  const at = text.indexOf(m[3]!);
  if (at < 0) return `${what} (the text around it is not shown: it may hold a secret)`;
  // V8 quotes ten characters before the offending one when it cuts the start.
  const offset = at + (m[2] ? 10 : 0);
  const line = text.slice(0, offset).split("\n").length;
  return `${what} on line ${line} (the text is not shown: it may hold a secret)`;
}
