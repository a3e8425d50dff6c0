/**
 * The leaf schemas config sections are built from: strings, booleans,
 * durations, sizes, counts, and strict objects whose unknown keys are errors.
 *
 * Messages carry no key: `issues.ts` puts the key path (or the flag or
 * environment variable the value came from) in front, so one leaf serves
 * every key. Each leaf's input side is plain JSON Schema (types, patterns,
 * minimums); what JSON Schema cannot say (a port range, a CIDR, the 24-day
 * timer ceiling) is a `check` or a transform, which the schema file omits and
 * the loader still enforces.
 * @module
 */
import * as v from "../deps/valibot.ts";
import { MAX_TIMER_MS, parseDurationMs } from "../base/duration.ts";
import { parseSize } from "../base/size.ts";

/** "a string", "an array", "null": how messages name what was found. */
export function typeName(x: unknown): string {
  if (x === null) return "null";
  if (Array.isArray(x)) return "an array";
  return `a ${typeof x}`;
}

/** What {@link parseDurationMs} accepts as a string, for the JSON Schema file. */
export const DURATION_PATTERN = "^\\s*\\d+(\\.\\d+)?(ms|s|m|h)\\s*$";
/** What {@link parseSize} accepts as a string, for the JSON Schema file. */
export const SIZE_PATTERN = "^\\s*\\d+(\\.\\d+)?\\s*([bB]|[kKmMgGtT]([bB]|[iI][bB])?)?\\s*$";
/** {@link SIZE_PATTERN} with the optional "/s" of a rate ("4KB/s"). */
export const RATE_PATTERN = "^\\s*\\d+(\\.\\d+)?\\s*([bB]|[kKmMgGtT]([bB]|[iI][bB])?)?(/[sS])?$";

/** A string; `what` completes "must be …" in the message. */
export function str(what = "a string") {
  return v.string((i) => `must be ${what}, got ${typeName(i.input)}`);
}

/** A non-empty string. */
export function nonEmpty() {
  return v.pipe(str(), v.minLength(1, "must not be empty"));
}

/** `true` or `false`. */
export function bool() {
  return v.boolean((i) => `must be true or false, got ${typeName(i.input)}`);
}

/** A positive safe integer (connection counts, concurrency). */
export function positiveInt() {
  const msg = (i: { input: unknown }) =>
    `must be a positive integer, got ${JSON.stringify(i.input)}`;
  return v.pipe(v.number(msg), v.integer(msg), v.minValue(1, msg), v.safeInteger(msg));
}

/**
 * A duration: seconds as a number, or "500ms", "90s", "10m", "1h"; the output
 * is milliseconds, at most {@link MAX_TIMER_MS} (timers fire at once past it)
 * and at least `min` ms (`minText` says it for people).
 */
export function duration(min = 0, minText = "") {
  const msg = (i: { input: unknown }) =>
    `must be a duration such as "10m", "30s" or a number of seconds, got ${
      JSON.stringify(i.input)
    }`;
  return v.pipe(
    v.union([
      v.pipe(v.string(msg), v.regex(new RegExp(DURATION_PATTERN), msg)),
      v.pipe(v.number(msg), v.minValue(0, msg)),
    ], msg),
    v.transform((x) => parseDurationMs(x)!),
    v.maxValue(MAX_TIMER_MS, "must be at most 596h (about 24 days)"),
    v.minValue(min, `must be at least ${minText}`),
  );
}

/**
 * A byte size: a number of bytes, or "50GB", "500MB", "2GiB"; `rate` also
 * takes a "/s" suffix ("4KB/s"). The output is bytes, at least `min`.
 */
export function size(opts: { rate?: boolean; min?: number; minText?: string } = {}) {
  const msg = (i: { input: unknown }) =>
    `must be a size such as "50GB", "500MB", "2GiB" or a number of bytes, got ${
      JSON.stringify(i.input)
    }`;
  const pattern = new RegExp(opts.rate ? RATE_PATTERN : SIZE_PATTERN);
  return v.pipe(
    v.union([
      v.pipe(v.string(msg), v.regex(pattern, msg)),
      v.pipe(v.number(msg), v.integer(msg), v.minValue(0, msg)),
    ], msg),
    v.rawTransform(({ dataset, addIssue, NEVER }) => {
      const raw = dataset.value;
      const n = parseSize(typeof raw === "string" ? raw.replace(/\/s$/i, "") : raw);
      // The pattern lets through what overflows a safe integer ("1e30"-sized digits).
      if (n === undefined) {
        addIssue({ message: msg({ input: raw }) });
        return NEVER;
      }
      return n;
    }),
    v.minValue(opts.min ?? 0, `must be at least ${opts.minText ?? ""}`),
  );
}

/**
 * A URL as a message may quote it: userinfo, query and fragment replaced,
 * found by text so an unparseable URL is cut too (a token may sit there, and
 * the value may have come from a variable an operator never reads back).
 */
export function urlForMessage(s: string): string {
  return s.replace(/^([^/?#]*\/\/)[^/?#]*@/, "$1<redacted>@").replace(/[?#].*$/s, "?<redacted>")
    .slice(0, 200);
}

/** An http(s) URL without credentials, query or fragment: what may be fetched from. */
export function httpUrl() {
  return v.pipe(
    str(),
    v.rawCheck(({ dataset, addIssue }) => {
      if (!dataset.typed) return;
      const s = dataset.value;
      let u: URL;
      try {
        u = new URL(s);
      } catch {
        addIssue({ message: `is not a valid URL: "${urlForMessage(s)}"` });
        return;
      }
      if (u.protocol !== "https:" && u.protocol !== "http:") {
        addIssue({ message: `must be an http or https URL, got "${urlForMessage(s)}"` });
      } else if (u.username || u.password || u.search || u.hash) {
        addIssue({ message: `must not carry credentials, a query or a fragment` });
      }
    }),
  );
}

/** An array of non-empty strings (hostnames, namespaces, egress entries). */
export function stringList() {
  const msg = "must be an array of non-empty strings";
  return v.array(v.pipe(v.string(msg), v.minLength(1, msg)), msg);
}

/**
 * An object whose keys must all be known: a typo in a service's config should
 * stop start-up, not be ignored. `issues.ts` words the unknown-key issue as
 * `unknown key "a.b" (known: …)` from this message.
 */
export function strict<const E extends v.ObjectEntries>(entries: E, knownLabel = "known") {
  const known = Object.keys(entries).filter((k) => k !== "$schema").join(", ");
  return objectOnly(v.strictObject(
    entries,
    (i) =>
      i.expected === "never"
        ? `${knownLabel}: ${known}`
        // A missing required key: valibot names it, quoted, as what was expected.
        : i.expected?.startsWith('"') && i.input === undefined
        ? "is required"
        : `must be an object, got ${typeName(i.input)}`,
  ));
}

/**
 * A union whose option is chosen by the input's shape (`pick`), so a mistake
 * inside the chosen option is reported as itself (`unknown key "via.tokn"`)
 * instead of as "matches no option"; input no option fits gets the union's
 * own message. The union's kind and options are kept for the JSON Schema file.
 */
export function pickOption<S extends v.GenericSchema>(
  union: S,
  pick: (input: unknown) => v.GenericSchema | undefined,
): S {
  return {
    ...union,
    "~run"(dataset, config) {
      const option = pick(dataset.value);
      return (option ?? union)["~run"](dataset, config) as ReturnType<S["~run"]>;
    },
  };
}

/** Keys valibot's record schema drops without a word (prototype pollution guards). */
const DROPPED_KEYS = ["__proto__", "prototype", "constructor"];

/**
 * Valibot's object and record schemas take arrays (they are objects to
 * `typeof`, and the output is a new object, so no later check can tell), and
 * its record silently drops the keys {@link DROPPED_KEYS}: an upstream named
 * "constructor" would vanish. Both are errors here. The wrapper keeps the
 * schema's kind and entries, so the JSON Schema file still describes it.
 */
export function objectOnly<S extends v.GenericSchema>(schema: S, what = "an object"): S {
  const issue = (input: unknown, message: string, key?: string): v.BaseIssue<unknown> =>
    ({
      kind: "schema",
      type: schema.type,
      input,
      expected: schema.expects,
      received: typeName(input),
      message,
      ...(key === undefined
        ? {}
        : { path: [{ type: "object", origin: "key", input, key, value: undefined }] }),
    }) as unknown as v.BaseIssue<unknown>;
  return {
    ...schema,
    "~run"(dataset, config) {
      const input = dataset.value;
      if (Array.isArray(input)) {
        return {
          typed: false,
          value: input,
          issues: [issue(input, `must be ${what}, got an array`)],
        } as ReturnType<S["~run"]>;
      }
      const out = schema["~run"](dataset, config);
      // Strict objects report these as unknown keys already.
      if (schema.type !== "record" || typeof input !== "object" || input === null) return out;
      const dropped = DROPPED_KEYS.filter((k) => Object.hasOwn(input, k));
      if (dropped.length === 0) return out;
      const extra = dropped.map((k) => issue(input, "is a reserved name, not a valid key", k));
      return {
        ...out,
        typed: false,
        issues: [...(out.issues ?? []), ...extra],
      } as ReturnType<S["~run"]>;
    },
  };
}
