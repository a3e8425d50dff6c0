/**
 * Durations as people write them in config files: a number of seconds, or a
 * string such as "500ms", "90s", "10m", "1h".
 * @module
 */

/**
 * The longest delay a timer can wait (2^31 - 1 ms, about 24.8 days): a longer
 * `setTimeout`/`setInterval` fires after 1 ms instead. Durations that end up
 * in a timer must stay below it.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

const UNITS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as const;

/**
 * Parses a duration: a non-negative number of seconds, or a string like
 * "90s", "10m", "1h", "500ms".
 *
 * @returns the duration in milliseconds, or undefined when `v` is not a duration
 */
export function parseDurationMs(v: unknown): number | undefined {
  if (typeof v === "number") return Number.isFinite(v) && v >= 0 ? v * 1000 : undefined;
  if (typeof v !== "string") return undefined;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(v.trim());
  return m ? Number(m[1]) * UNITS[m[2] as keyof typeof UNITS] : undefined;
}
