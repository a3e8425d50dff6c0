/**
 * The standard `process_*` series that dashboards and alerts expect, with the
 * names, types, units and HELP texts of the Prometheus client libraries'
 * process collector (client_golang `collectors.NewProcessCollector`), plus
 * the runtime's heap as `deno_*` gauges.
 *
 * On Linux CPU time, virtual memory and descriptors come from `/proc/self`
 * (`stat`, `limits`, `fd/`), read synchronously at scrape time through libc
 * (`procfs.ts` says why): two small procfs reads and one directory listing,
 * about 0.1 ms. Where a file cannot be read (another OS, no `ffi` permission,
 * procfs hidden) its series are left out instead of reported as zero,
 * because a zero fd count or CPU time is a lie a dashboard would plot.
 * Resident memory and the heap come from `Deno.memoryUsage()` on every OS
 * (on Linux its `rss` is the kernel's resident count from `statm`, the figure
 * `status` shows as VmRSS, without reading a third file), and the start time
 * from the runtime.
 *
 * Heap series are `deno_heap_used_bytes`, `deno_heap_total_bytes` and
 * `deno_external_memory_bytes` (V8's numbers as Deno reports them); they are
 * not called `nodejs_*` because this is not Node.js, and not `process_*`
 * because client_golang's `process_*` set has no heap and prom-client's
 * `process_heap_bytes` means the data segment.
 * @module
 */
import { type Collector, renderFamily } from "./metrics.ts";
import { ProcReader } from "./procfs.ts";

/** Clock ticks per second of `/proc/<pid>/stat` times (fixed at 100 in the Linux user ABI). */
const USER_HZ = 100;

/** Where the readings come from; tests point `procSelf` at fixtures. */
export interface ProcessSources {
  /**
   * The process's procfs directory (default `/proc/self` on Linux, none
   * elsewhere). Missing files leave their series out.
   */
  procSelf?: string | undefined;
  /** Process start in ms since the epoch (default `performance.timeOrigin`). */
  startTimeMs?: number;
  /** Memory as `Deno.memoryUsage()` reports it (default that). */
  memoryUsage?: () => Deno.MemoryUsage;
}

/** What one `/proc/self/stat` line says (fields of proc(5)). */
export interface ProcStat {
  /** utime + stime in seconds. */
  cpuSeconds: number;
  /** vsize in bytes. */
  virtualBytes: number;
}

/**
 * Parses `/proc/<pid>/stat`. The command name (field 2) is in parentheses
 * and may itself hold spaces and `)`, so fields are counted from the last
 * `)`. Returns undefined for anything else.
 */
export function parseProcStat(text: string): ProcStat | undefined {
  const close = text.lastIndexOf(")");
  if (close < 0) return undefined;
  // After ") ": field 3 (state) is index 0, so field n is index n - 3.
  const f = text.slice(close + 2).trim().split(" ");
  const utime = Number(f[14 - 3]);
  const stime = Number(f[15 - 3]);
  const vsize = Number(f[23 - 3]);
  if (![utime, stime, vsize].every((n) => Number.isSafeInteger(n) && n >= 0)) return undefined;
  return { cpuSeconds: (utime + stime) / USER_HZ, virtualBytes: vsize };
}

/**
 * The soft "Max open files" limit of `/proc/<pid>/limits`; `unlimited`
 * becomes +Inf (client_golang reports the raw RLIM_INFINITY instead, a number
 * no dashboard can use either).
 */
export function parseMaxFds(text: string): number | undefined {
  const m = /^Max open files\s+(\d+|unlimited)\s/m.exec(text);
  if (!m) return undefined;
  return m[1] === "unlimited" ? Infinity : Number(m[1]);
}

const HELP = {
  cpu: "Total user and system CPU time spent in seconds.",
  openFds: "Number of open file descriptors.",
  maxFds: "Maximum number of open file descriptors.",
  virtual: "Virtual memory size in bytes.",
  resident: "Resident memory size in bytes.",
  start: "Start time of the process since unix epoch in seconds.",
  heapUsed: "V8 heap in use (Deno.memoryUsage().heapUsed), in bytes.",
  heapTotal: "V8 heap reserved (Deno.memoryUsage().heapTotal), in bytes.",
  external:
    "Memory of JavaScript objects held outside the V8 heap (Deno.memoryUsage().external), in bytes.",
} as const;

/**
 * The process collector: register it with `Registry.registerCollector`, and
 * dispose it when done (it keeps libc open between scrapes).
 */
export class ProcessCollector implements Collector, Disposable {
  readonly names = [
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_max_fds",
    "process_virtual_memory_bytes",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "deno_heap_used_bytes",
    "deno_heap_total_bytes",
    "deno_external_memory_bytes",
  ] as const;
  readonly #proc: string | undefined;
  readonly #startSeconds: number;
  readonly #memoryUsage: () => Deno.MemoryUsage;
  #reader: ProcReader | undefined;

  constructor(sources: ProcessSources = {}) {
    this.#proc = "procSelf" in sources
      ? sources.procSelf
      : Deno.build.os === "linux"
      ? "/proc/self"
      : undefined;
    // The runtime's time origin is when this process's runtime started, to
    // the microsecond; procfs only gives boot time in whole seconds plus
    // ticks, which can put the start up to a second too early.
    this.#startSeconds = (sources.startTimeMs ?? performance.timeOrigin) / 1000;
    this.#memoryUsage = sources.memoryUsage ?? (() => Deno.memoryUsage());
  }

  /**
   * libc, opened at the first scrape and kept: `dlopen` costs about 2 ms,
   * some twenty times a whole scrape's reads. A failed open (no `ffi`
   * permission, out of descriptors) is tried again at the next scrape.
   */
  #procReader(): ProcReader | undefined {
    return this.#reader ??= ProcReader.open();
  }

  /** Closes libc (the collector then opens it again if asked to render). */
  [Symbol.dispose](): void {
    this.#reader?.[Symbol.dispose]();
    this.#reader = undefined;
  }

  render(out: string[]): void {
    const proc = this.#proc;
    const reader = proc === undefined ? undefined : this.#procReader();
    // Kept open between scrapes: out of descriptors, the series stay.
    const readText = (name: string) => reader?.readKept(`${proc}/${name}`) ?? "";
    const stat = parseProcStat(readText("stat"));
    const mem = this.#memoryUsage();
    if (stat) renderFamily(out, "process_cpu_seconds_total", HELP.cpu, "counter", stat.cpuSeconds);
    if (reader) {
      // Read before the listing, so its kept descriptor is in the count from the first scrape.
      const max = parseMaxFds(readText("limits"));
      // The listing's own descriptor is left out, as prom-client does
      // (client_golang counts it); stat's and limits', kept, are counted.
      const open = reader.countKept(`${proc}/fd`, 1);
      if (open !== undefined) renderFamily(out, "process_open_fds", HELP.openFds, "gauge", open);
      if (max !== undefined) renderFamily(out, "process_max_fds", HELP.maxFds, "gauge", max);
    }
    if (stat) {
      renderFamily(out, "process_virtual_memory_bytes", HELP.virtual, "gauge", stat.virtualBytes);
    }
    renderFamily(out, "process_resident_memory_bytes", HELP.resident, "gauge", mem.rss);
    renderFamily(out, "process_start_time_seconds", HELP.start, "gauge", this.#startSeconds);
    renderFamily(out, "deno_heap_used_bytes", HELP.heapUsed, "gauge", mem.heapUsed);
    renderFamily(out, "deno_heap_total_bytes", HELP.heapTotal, "gauge", mem.heapTotal);
    renderFamily(out, "deno_external_memory_bytes", HELP.external, "gauge", mem.external);
  }
}
