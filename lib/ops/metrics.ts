/**
 * Prometheus metrics without a dependency: counters, gauges and histograms
 * with labels, rendered in the text exposition format (version 0.0.4).
 *
 * Only what Repoxy needs is here. Series are kept in a `Map` keyed by the
 * rendered label set, so an observation is one string join and one lookup.
 * Label values are never client-chosen strings (route kinds, status codes,
 * configured upstream names), which keeps the number of series bounded.
 * @module
 */

/** Content type of the text exposition format. */
export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** Label values by label name. */
export type Labels = Record<string, string | number>;

/** One metric family: a {@link Counter}, {@link Gauge} or {@link Histogram}. */
export interface Metric {
  readonly name: string;
  readonly help: string;
  readonly type: "counter" | "gauge" | "histogram";
  /** Appends the sample lines (without HELP/TYPE) to `out`. */
  samples(out: string[]): void;
}

const NAME_RE = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_RE = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** Escapes a label value: backslash, double quote and newline. */
export function escapeLabelValue(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

function escapeHelp(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

/** Formats a sample value as Prometheus expects (`+Inf`, `NaN`, plain numbers). */
export function formatValue(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}

function labelKey(names: readonly string[], labels: Labels): string {
  if (names.length === 0) return "";
  const parts: string[] = [];
  for (const n of names) {
    const v = labels[n];
    if (v === undefined) throw new TypeError(`Missing label "${n}"`);
    parts.push(`${n}="${escapeLabelValue(String(v))}"`);
  }
  return parts.join(",");
}

function checkNames(name: string, labelNames: readonly string[]) {
  if (!NAME_RE.test(name)) throw new TypeError(`Invalid metric name "${name}"`);
  for (const l of labelNames) {
    if (!LABEL_RE.test(l) || l.startsWith("__") || l === "le") {
      throw new TypeError(`Invalid label name "${l}"`);
    }
  }
}

/**
 * Series by label values, one Map level per label name in order: finding the
 * series of a request is a few Map lookups with no string built (rendering
 * the label key per observation was most of what metrics cost a cached
 * metadata answer). Leaves are the very objects kept under the rendered key,
 * so `200` and `"200"` (the same series once rendered) share one.
 */
class SeriesIndex<T> {
  readonly #root = new Map<string | number, unknown>();
  constructor(readonly names: readonly string[], readonly make: (labels: Labels) => T) {}

  get(labels: Labels): T {
    let m = this.#root;
    const names = this.names;
    if (names.length === 0) {
      let s = m.get("") as T | undefined;
      if (s === undefined) m.set("", s = this.make(labels));
      return s;
    }
    const last = names.length - 1;
    for (let i = 0; i < last; i++) {
      const v = labels[names[i]!];
      if (v === undefined) throw new TypeError(`Missing label "${names[i]}"`);
      let next = m.get(v) as Map<string | number, unknown> | undefined;
      if (next === undefined) m.set(v, next = new Map());
      m = next;
    }
    const v = labels[names[last]!];
    if (v === undefined) throw new TypeError(`Missing label "${names[last]}"`);
    let s = m.get(v) as T | undefined;
    if (s === undefined) m.set(v, s = this.make(labels));
    return s;
  }
}

function series(name: string, key: string): string {
  return key === "" ? name : `${name}{${key}}`;
}

/** A monotonically increasing count. */
export class Counter implements Metric {
  readonly type = "counter";
  readonly #values = new Map<string, { labels: Labels; value: number }>();
  readonly #index: SeriesIndex<{ labels: Labels; value: number }>;
  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[] = [],
  ) {
    checkNames(name, labelNames);
    this.#index = new SeriesIndex(labelNames, (labels) => {
      const k = labelKey(this.labelNames, labels);
      let s = this.#values.get(k);
      if (!s) this.#values.set(k, s = { labels: { ...labels }, value: 0 });
      return s;
    });
  }

  /** Adds `n` (default 1) to the series with these labels. */
  inc(labels: Labels = {}, n = 1): void {
    if (!(n >= 0)) throw new RangeError(`Counter "${this.name}" cannot decrease`);
    this.#index.get(labels).value += n;
  }

  /** The current value of one series (0 when never incremented). */
  get(labels: Labels = {}): number {
    return this.#values.get(labelKey(this.labelNames, labels))?.value ?? 0;
  }

  /** Sum over every series whose labels include all of `match`. */
  sum(match: Labels = {}): number {
    let total = 0;
    for (const s of this.#values.values()) {
      if (Object.entries(match).every(([k, v]) => String(s.labels[k]) === String(v))) {
        total += s.value;
      }
    }
    return total;
  }

  samples(out: string[]): void {
    for (const [k, s] of this.#values) out.push(`${series(this.name, k)} ${formatValue(s.value)}`);
  }
}

/** A value that goes up and down; either set directly or read at scrape time. */
export class Gauge implements Metric {
  readonly type = "gauge";
  readonly #values = new Map<string, number>();
  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[] = [],
    /** Called at scrape time to set current values (cheap reads only). */
    readonly collect?: (g: Gauge) => void,
  ) {
    checkNames(name, labelNames);
  }

  /** Sets the series with these labels. */
  set(labels: Labels, v: number): void {
    this.#values.set(labelKey(this.labelNames, labels), v);
  }

  /** The current value of one series. */
  get(labels: Labels = {}): number | undefined {
    return this.#values.get(labelKey(this.labelNames, labels));
  }

  samples(out: string[]): void {
    this.collect?.(this);
    for (const [k, v] of this.#values) out.push(`${series(this.name, k)} ${formatValue(v)}`);
  }
}

interface HistogramSeries {
  counts: number[];
  sum: number;
  count: number;
}

/** A distribution of observations over fixed buckets (cumulative when rendered). */
export class Histogram implements Metric {
  readonly type = "histogram";
  readonly buckets: readonly number[];
  readonly #values = new Map<string, HistogramSeries>();
  readonly #index: SeriesIndex<HistogramSeries>;
  constructor(
    readonly name: string,
    readonly help: string,
    buckets: readonly number[],
    readonly labelNames: readonly string[] = [],
  ) {
    checkNames(name, labelNames);
    this.#index = new SeriesIndex(labelNames, (labels) => {
      const k = labelKey(this.labelNames, labels);
      let s = this.#values.get(k);
      if (!s) {
        s = { counts: new Array(this.buckets.length).fill(0), sum: 0, count: 0 };
        this.#values.set(k, s);
      }
      return s;
    });
    const sorted = [...buckets].sort((a, b) => a - b);
    if (sorted.length === 0 || sorted.some((b, i) => i > 0 && b === sorted[i - 1])) {
      throw new TypeError(`Histogram "${name}" needs distinct buckets`);
    }
    this.buckets = sorted.filter((b) => b !== Infinity);
  }

  /** Records one observation. */
  observe(labels: Labels, v: number): void {
    const s = this.#index.get(labels);
    // Stored per bucket (not cumulative) so observe is one increment.
    const buckets = this.buckets;
    let i = 0;
    while (i < buckets.length && !(v <= buckets[i]!)) i++;
    if (i < buckets.length) s.counts[i]!++;
    s.sum += v;
    s.count++;
  }

  /** Number of observations of one series. */
  count(labels: Labels = {}): number {
    return this.#values.get(labelKey(this.labelNames, labels))?.count ?? 0;
  }

  samples(out: string[]): void {
    for (const [k, s] of this.#values) {
      const prefix = k === "" ? "" : k + ",";
      let cumulative = 0;
      for (const [i, b] of this.buckets.entries()) {
        cumulative += s.counts[i]!;
        out.push(`${this.name}_bucket{${prefix}le="${formatValue(b)}"} ${cumulative}`);
      }
      out.push(`${this.name}_bucket{${prefix}le="+Inf"} ${s.count}`);
      out.push(`${series(this.name + "_sum", k)} ${formatValue(s.sum)}`);
      out.push(`${series(this.name + "_count", k)} ${s.count}`);
    }
  }
}

/**
 * Several unlabelled families read together at scrape time (one reading of
 * `/proc/self` serves six series). A family the collector cannot know on
 * this system is left out entirely rather than rendered with a made-up value.
 */
export interface Collector {
  /** Every family name it may render (checked for clashes when registered). */
  readonly names: readonly string[];
  /** Appends whole families, HELP and TYPE lines included (see {@link renderFamily}). */
  render(out: string[]): void;
}

/** Appends one family with a single unlabelled sample, for {@link Collector}s. */
export function renderFamily(
  out: string[],
  name: string,
  help: string,
  type: "counter" | "gauge",
  value: number,
): void {
  out.push(`# HELP ${name} ${escapeHelp(help)}`, `# TYPE ${name} ${type}`);
  out.push(`${name} ${formatValue(value)}`);
}

/** A set of metrics rendered together. */
export class Registry {
  readonly #items: (Metric | Collector)[] = [];
  readonly #names = new Set<string>();

  #claim(names: readonly string[]): void {
    for (const n of names) {
      if (!NAME_RE.test(n)) throw new TypeError(`Invalid metric name "${n}"`);
      if (this.#names.has(n)) throw new TypeError(`Metric "${n}" is already registered`);
    }
    for (const n of names) this.#names.add(n);
  }

  /** Adds a metric; names must be unique. Returns it for chaining. */
  register<M extends Metric>(m: M): M {
    this.#claim([m.name]);
    this.#items.push(m);
    return m;
  }

  /** Adds a collector; its names must not clash with any other. Returns it for chaining. */
  registerCollector<C extends Collector>(c: C): C {
    this.#claim(c.names);
    this.#items.push(c);
    return c;
  }

  /** The whole registry in the text exposition format, ending with a newline. */
  render(): string {
    const out: string[] = [];
    for (const m of this.#items) {
      if ("names" in m) {
        m.render(out);
        continue;
      }
      out.push(`# HELP ${m.name} ${escapeHelp(m.help)}`);
      out.push(`# TYPE ${m.name} ${m.type}`);
      m.samples(out);
    }
    return out.join("\n") + "\n";
  }
}
