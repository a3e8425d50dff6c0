/**
 * Logging: one line per event, as text for humans or JSON lines for journald
 * and log shippers. All output of the service goes through here (lint forbids
 * `console` elsewhere).
 * @module
 */

/** Structured fields attached to a log line. */
export type LogFields = Record<string, string | number | boolean | undefined | null>;

/** Severity of a log line. */
export type LogLevel = "debug" | "info" | "warn" | "error";

/** The logging interface the rest of the code depends on. */
export interface Logger {
  log(level: LogLevel, msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
}

const LEVELS: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

function textValue(v: string | number | boolean): string {
  // A number or boolean always prints as plain characters: no pattern test.
  if (typeof v !== "string") return String(v);
  const s = v;
  return /^[\w.:/@+-]*$/.test(s) && s !== "" ? s : JSON.stringify(s);
}

/**
 * Creates a logger writing to a sink (stderr by default).
 *
 * @param format "text" (`2026-01-01T00:00:00.000Z INFO msg key=value`) or "json"
 * @param sink receives each complete line, without the newline
 */
export function createLogger(
  format: "text" | "json" = "text",
  sink: (line: string) => void = defaultSink,
  minLevel: LogLevel = "info",
  now?: () => Date,
): Logger {
  const stamp = now ? () => now().toISOString() : isoNow;
  const log = (level: LogLevel, msg: string, fields: LogFields = {}) => {
    if (LEVELS[level] < LEVELS[minLevel]) return;
    const ts = stamp();
    if (format === "json") {
      const obj: Record<string, unknown> = { ts, level, msg };
      for (const [k, v] of Object.entries(fields)) if (v !== undefined) obj[k] = v;
      sink(JSON.stringify(obj));
      return;
    }
    let line = `${ts} ${level.toUpperCase()} ${msg}`;
    for (const [k, v] of Object.entries(fields)) {
      if (v !== undefined && v !== null) line += ` ${k}=${textValue(v)}`;
    }
    sink(line);
  };
  return {
    log,
    info: (m, f) => log("info", m, f),
    warn: (m, f) => log("warn", m, f),
    error: (m, f) => log("error", m, f),
  };
}

let lastMs = NaN;
let lastIso = "";
/**
 * The current time as ISO 8601, formatted once per millisecond: under load
 * many access log lines share a millisecond, and a Date plus its formatting
 * per line was a measurable part of a cached metadata answer.
 */
function isoNow(): string {
  const ms = Date.now();
  if (ms !== lastMs) {
    lastMs = ms;
    lastIso = new Date(ms).toISOString();
  }
  return lastIso;
}

const encoder = new TextEncoder();
/** Flushed at once past this size, so a burst never holds much in memory. */
const MAX_PENDING = 64 * 1024;
let pending = "";
let flushTimer: ReturnType<typeof setTimeout> | undefined;

function flushStderr(): void {
  if (flushTimer !== undefined) clearTimeout(flushTimer);
  flushTimer = undefined;
  if (pending === "") return;
  const bytes = encoder.encode(pending);
  pending = "";
  let off = 0;
  while (off < bytes.length) off += Deno.stderr.writeSync(bytes.subarray(off));
}

// Lines written in one event-loop turn go out in one write(2): a synchronous
// write per access-log line was a third of the JavaScript time of a metadata
// hit under load. At most one turn's lines wait (about a millisecond), and
// exit flushes them.
function defaultSink(line: string): void {
  pending += line + "\n";
  if (pending.length >= MAX_PENDING) flushStderr();
  else if (flushTimer === undefined) flushTimer = setTimeout(flushStderr, 0);
}
globalThis.addEventListener("unload", flushStderr);

/** A logger that keeps lines in memory, for tests. */
export function memoryLogger(): Logger & { lines: string[]; records: Record<string, unknown>[] } {
  const lines: string[] = [];
  const records: Record<string, unknown>[] = [];
  const inner = createLogger("json", (l) => {
    lines.push(l);
    records.push(JSON.parse(l));
  }, "debug");
  return Object.assign(inner, { lines, records });
}
