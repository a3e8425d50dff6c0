/**
 * A strict parser of the Prometheus text exposition format for tests: it
 * rejects anything a scraper would choke on (samples before their TYPE,
 * duplicate series, bad escapes, non-cumulative histogram buckets).
 * @module
 */

/** One sample line. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** A parsed exposition. */
export interface Exposition {
  types: Map<string, string>;
  help: Map<string, string>;
  samples: Sample[];
  /** The value of exactly one series; throws when it is missing. */
  value(name: string, labels?: Record<string, string>): number;
  /** Whether a series exists. */
  has(name: string, labels?: Record<string, string>): boolean;
}

const NAME = "[a-zA-Z_:][a-zA-Z0-9_:]*";
const SAMPLE_RE = new RegExp(`^(${NAME})(?:\\{(.*)\\})? (\\S+)$`);

function parseLabels(s: string, line: string): Record<string, string> {
  const out: Record<string, string> = {};
  let i = 0;
  while (i < s.length) {
    const m = /^([a-zA-Z_][a-zA-Z0-9_]*)="/.exec(s.slice(i));
    if (!m) throw new Error(`bad label at ${i} in: ${line}`);
    i += m[0].length;
    let v = "";
    while (true) {
      const c = s[i];
      if (c === undefined) throw new Error(`unterminated label value in: ${line}`);
      if (c === "\\") {
        const n = s[i + 1];
        if (n === "\\") v += "\\";
        else if (n === '"') v += '"';
        else if (n === "n") v += "\n";
        else throw new Error(`bad escape in: ${line}`);
        i += 2;
        continue;
      }
      if (c === '"') {
        i++;
        break;
      }
      v += c;
      i++;
    }
    if (m[1]! in out) throw new Error(`duplicate label ${m[1]} in: ${line}`);
    out[m[1]!] = v;
    if (s[i] === ",") i++;
    else if (i !== s.length) throw new Error(`expected , in: ${line}`);
  }
  return out;
}

function parseValue(s: string, line: string): number {
  if (s === "+Inf") return Infinity;
  if (s === "-Inf") return -Infinity;
  if (s === "NaN") return NaN;
  if (!/^-?\d+(?:\.\d+)?(?:e[+-]?\d+)?$/i.test(s)) throw new Error(`bad value in: ${line}`);
  return Number(s);
}

function familyOf(name: string, types: Map<string, string>): string | undefined {
  if (types.has(name)) return name;
  for (const suffix of ["_bucket", "_sum", "_count"]) {
    if (name.endsWith(suffix)) {
      const base = name.slice(0, -suffix.length);
      if (types.get(base) === "histogram" || types.get(base) === "summary") return base;
    }
  }
  return undefined;
}

function seriesKey(name: string, labels: Record<string, string>): string {
  return name + JSON.stringify(Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : 1)));
}

/** Parses and validates an exposition. */
export function parseExposition(text: string): Exposition {
  if (!text.endsWith("\n")) throw new Error("exposition must end with a newline");
  const types = new Map<string, string>();
  const help = new Map<string, string>();
  const samples: Sample[] = [];
  const seen = new Set<string>();
  for (const line of text.slice(0, -1).split("\n")) {
    if (line === "") throw new Error("empty line in exposition");
    if (line.startsWith("# HELP ")) {
      const m = new RegExp(`^# HELP (${NAME}) (.*)$`).exec(line);
      if (!m) throw new Error(`bad HELP: ${line}`);
      if (help.has(m[1]!)) throw new Error(`second HELP for ${m[1]}`);
      help.set(m[1]!, m[2]!);
      continue;
    }
    if (line.startsWith("# TYPE ")) {
      const m = new RegExp(`^# TYPE (${NAME}) (counter|gauge|histogram|summary|untyped)$`).exec(
        line,
      );
      if (!m) throw new Error(`bad TYPE: ${line}`);
      if (types.has(m[1]!)) throw new Error(`second TYPE for ${m[1]}`);
      types.set(m[1]!, m[2]!);
      continue;
    }
    if (line.startsWith("#")) continue;
    const m = SAMPLE_RE.exec(line);
    if (!m) throw new Error(`bad sample line: ${line}`);
    const name = m[1]!;
    if (!familyOf(name, types)) throw new Error(`sample before its TYPE: ${line}`);
    const labels = m[2] ? parseLabels(m[2], line) : {};
    const key = seriesKey(name, labels);
    if (seen.has(key)) throw new Error(`duplicate series: ${line}`);
    seen.add(key);
    const value = parseValue(m[3]!, line);
    if (types.get(familyOf(name, types)!) === "counter" && !(value >= 0)) {
      throw new Error(`negative counter: ${line}`);
    }
    samples.push({ name, labels, value });
  }
  // Histograms: buckets cumulative, +Inf equal to _count.
  for (const [family, type] of types) {
    if (type !== "histogram") continue;
    const groups = new Map<string, Sample[]>();
    for (const s of samples.filter((x) => x.name === `${family}_bucket`)) {
      const { le: _le, ...rest } = s.labels;
      const k = seriesKey(family, rest);
      groups.set(k, [...(groups.get(k) ?? []), s]);
    }
    for (const [k, buckets] of groups) {
      let last = -Infinity;
      let prev = 0;
      for (const b of buckets) {
        const le = parseValue(b.labels.le ?? "", `le of ${family}`);
        if (!(le > last)) throw new Error(`buckets of ${k} not in increasing le order`);
        if (b.value < prev) throw new Error(`buckets of ${k} not cumulative`);
        last = le;
        prev = b.value;
      }
      if (last !== Infinity) throw new Error(`${k} has no +Inf bucket`);
      const rest = { ...buckets[0]!.labels };
      delete rest.le;
      const count = samples.find((s) =>
        s.name === `${family}_count` && seriesKey(family, s.labels) === seriesKey(family, rest)
      );
      if (!count || count.value !== prev) throw new Error(`${k}: +Inf bucket differs from _count`);
    }
  }
  const find = (name: string, labels: Record<string, string> = {}) =>
    samples.find((s) => seriesKey(s.name, s.labels) === seriesKey(name, labels));
  return {
    types,
    help,
    samples,
    has: (name, labels) => find(name, labels) !== undefined,
    value(name, labels = {}) {
      const s = find(name, labels);
      if (!s) throw new Error(`no series ${name}${JSON.stringify(labels)}`);
      return s.value;
    },
  };
}
