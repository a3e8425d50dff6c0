/**
 * The standard `process_*` series: the names, types and HELP texts of the
 * Prometheus client libraries, values checked against independent sources
 * (getrusage, `ulimit`, Deno.memoryUsage, the process's own /proc read from
 * outside), fds that move when files are opened, series left out where
 * procfs is missing, and the real server's start time.
 */
import process from "node:process";
import { assert, assertEquals, assertThrows } from "../lib/deps/assert.ts";
import { fromFileUrl, join } from "../lib/deps/path.ts";
import { Counter, Gauge, Registry } from "../lib/ops/metrics.ts";
import {
  parseMaxFds,
  parseProcStat,
  ProcessCollector,
  type ProcessSources,
} from "../lib/ops/process_metrics.ts";
import { ProcReader } from "../lib/ops/procfs.ts";
import { type Exposition, parseExposition } from "./_prom.ts";
import { spawnRepoxy } from "./_process.ts";
import { tempDir } from "./_helpers.ts";

const ROOT = fromFileUrl(new URL("..", import.meta.url));
const DENO_RUN = ["run", "-q", "--frozen", "--config", join(ROOT, "deno.json"), "-P=serve"];
const ON_LINUX = Deno.build.os === "linux";
if (!ON_LINUX) {
  // deno-lint-ignore no-console
  console.log("SKIP: process_metrics_test: /proc/self readings are checked on Linux only");
}

/** `VmRSS` of `/proc/<pid>/status` in bytes: a reading independent of Deno.memoryUsage(). */
function parseStatusRss(text: string): number | undefined {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(text);
  return m ? Number(m[1]) * 1024 : undefined;
}

function scrape(sources?: ProcessSources): Exposition {
  const r = new Registry();
  using _c = r.registerCollector(new ProcessCollector(sources));
  return parseExposition(r.render());
}

/** Name, type and HELP as client_golang's process collector writes them. */
const STANDARD: [string, string, string][] = [
  ["process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds."],
  ["process_open_fds", "gauge", "Number of open file descriptors."],
  ["process_max_fds", "gauge", "Maximum number of open file descriptors."],
  ["process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes."],
  ["process_resident_memory_bytes", "gauge", "Resident memory size in bytes."],
  ["process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds."],
];
const HEAP = ["deno_heap_used_bytes", "deno_heap_total_bytes", "deno_external_memory_bytes"];

Deno.test({
  name: "process collector: standard names, types and HELP; every value parses",
  ignore: !ON_LINUX,
  fn() {
    const m = scrape();
    for (const [name, type, help] of STANDARD) {
      assertEquals(m.types.get(name), type, name);
      assertEquals(m.help.get(name), help, name);
      const v = m.value(name);
      assert(Number.isFinite(v) && v > 0, `${name} = ${v}`);
    }
    for (const name of HEAP) {
      assertEquals(m.types.get(name), "gauge");
      assert(m.value(name) > 0, name);
    }
    // One unlabelled sample per family, and nothing else.
    assertEquals(m.samples.map((s) => s.name), [...STANDARD.map(([n]) => n), ...HEAP]);
    assert(m.samples.every((s) => Object.keys(s.labels).length === 0));
    assert(m.value("deno_heap_used_bytes") <= m.value("deno_heap_total_bytes"));
    assert(m.value("process_resident_memory_bytes") < m.value("process_virtual_memory_bytes"));
  },
});

Deno.test({
  name: "process_open_fds moves by exactly the files opened and closed",
  ignore: !ON_LINUX,
  async fn() {
    await using dir = await tempDir();
    // `deno test --parallel` runs other test modules in this same process, so their files and
    // sockets come and go between two scrapes: try a few times, and require one attempt in which
    // the count moved by exactly 5 and back with nothing else happening.
    const seen: string[] = [];
    for (let attempt = 0; attempt < 20; attempt++) {
      const before = scrape().value("process_open_fds");
      const files: Deno.FsFile[] = [];
      let during: number;
      try {
        for (let i = 0; i < 5; i++) {
          files.push(await Deno.open(join(dir.path, `f${i}`), { create: true, write: true }));
        }
        during = scrape().value("process_open_fds");
      } finally {
        for (const f of files) f.close();
      }
      const after = scrape().value("process_open_fds");
      if (during === before + 5 && after === before) return;
      seen.push(`${before}->${during}->${after}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error(`process_open_fds never moved by exactly 5 and back: ${seen.join(", ")}`);
  },
});

Deno.test({
  name: "process_max_fds is the soft RLIMIT_NOFILE that `ulimit -Sn` reports",
  ignore: !ON_LINUX,
  async fn() {
    const out = await new Deno.Command("sh", { args: ["-c", "ulimit -Sn"], stderr: "null" })
      .output();
    const soft = new TextDecoder().decode(out.stdout).trim();
    const expected = soft === "unlimited" ? Infinity : Number(soft);
    assert(expected > 0, soft);
    assertEquals(scrape().value("process_max_fds"), expected);
  },
});

Deno.test({
  name: "process_resident_memory_bytes is the real RSS: Deno.memoryUsage() and VmRSS around it",
  ignore: !ON_LINUX,
  fn() {
    using proc = ProcReader.open()!;
    const vmRss = () => parseStatusRss(proc.readText("/proc/self/status")!)!;
    const a = [Deno.memoryUsage().rss, vmRss()];
    const v = scrape().value("process_resident_memory_bytes");
    const b = [Deno.memoryUsage().rss, vmRss()];
    // The scrape itself may touch a few pages: allow 4 MiB either side.
    const slack = 4 * 2 ** 20;
    const all = [...a, ...b];
    assert(
      v >= Math.min(...all) - slack && v <= Math.max(...all) + slack,
      `${v} vs ${all.join(", ")}`,
    );
    // Grows with memory the process really touches: 64 MiB written page by page.
    const big = new Uint8Array(64 * 2 ** 20);
    for (let i = 0; i < big.length; i += 4096) big[i] = 1;
    const after = scrape().value("process_resident_memory_bytes");
    assert(after - v >= 48 * 2 ** 20, `${v} -> ${after}`);
    assertEquals(big[4096], 1);
  },
});

Deno.test({
  name: "process_cpu_seconds_total agrees with getrusage and grows with work",
  ignore: !ON_LINUX,
  fn() {
    const rusage = () => {
      const u = process.cpuUsage();
      return (u.user + u.system) / 1e6;
    };
    const lo = rusage();
    const first = scrape().value("process_cpu_seconds_total");
    const hi = rusage();
    // procfs counts 10 ms ticks and rounds down; getrusage counts microseconds.
    assert(first >= lo - 0.05 && first <= hi + 0.01, `${first} vs ${lo}..${hi}`);
    // Burn 0.2 s of CPU (measured by getrusage, not by the wall clock).
    let x = 0;
    while (rusage() < hi + 0.2) for (let i = 0; i < 100_000; i++) x += Math.sqrt(i);
    assert(x > 0);
    const second = scrape().value("process_cpu_seconds_total");
    assert(second - first >= 0.1, `${first} -> ${second}`);
  },
});

Deno.test("without procfs the series that only it knows are left out, not zero", async () => {
  await using dir = await tempDir(); // an empty directory stands for "no /proc/self"
  const mem = { rss: 123_456_789, heapUsed: 1_000, heapTotal: 2_000, external: 3_000 };
  for (const procSelf of [undefined, dir.path]) {
    const m = scrape({ procSelf, startTimeMs: 1_700_000_000_250, memoryUsage: () => mem });
    for (const name of STANDARD.map(([n]) => n)) {
      const known = name === "process_resident_memory_bytes" ||
        name === "process_start_time_seconds";
      assertEquals(m.types.has(name), known, name);
      assertEquals(m.help.has(name), known, name);
    }
    assertEquals(m.value("process_resident_memory_bytes"), 123_456_789);
    assertEquals(m.value("process_start_time_seconds"), 1_700_000_000.25);
    assertEquals(m.value("deno_heap_used_bytes"), 1_000);
    assertEquals(m.value("deno_heap_total_bytes"), 2_000);
    assertEquals(m.value("deno_external_memory_bytes"), 3_000);
    assertEquals(m.samples.length, 5);
  }
});

Deno.test({
  name: "without the ffi permission procfs cannot be read: its series are left out",
  ignore: !ON_LINUX,
  permissions: { read: true, write: true, ffi: false },
  fn() {
    const m = scrape();
    assertEquals(m.samples.map((s) => s.name), [
      "process_resident_memory_bytes",
      "process_start_time_seconds",
      ...HEAP,
    ]);
    assertEquals(m.help.get("process_resident_memory_bytes"), STANDARD[4]![2]);
  },
});

Deno.test("a collector's names cannot clash with another metric's", () => {
  const r = new Registry();
  r.register(new Gauge("process_open_fds", "mine"));
  using c = new ProcessCollector({ procSelf: undefined });
  assertThrows(() => r.registerCollector(c), TypeError, "process_open_fds");
  const r2 = new Registry();
  r2.registerCollector(c);
  assertThrows(() => r2.register(new Counter("process_cpu_seconds_total", "again")), TypeError);
});

Deno.test("procfs files are parsed field by field, even with a hostile command name", async () => {
  await using dir = await tempDir();
  // A command name with spaces and ")" must not shift the fields.
  const stat =
    "4242 (evil) 1 2 (x) S 1 4242 4242 0 -1 4194560 500 0 0 0 1234 567 0 0 20 0 6 0 9999 " +
    "18601070592 9670 18446744073709551615 1 1 0 0 0 0 0 4096 1088 0 0 0 17 1 0 0 0 0 0\n";
  await Deno.writeTextFile(join(dir.path, "stat"), stat);
  await Deno.writeTextFile(
    join(dir.path, "limits"),
    "Limit                     Soft Limit           Hard Limit           Units     \n" +
      "Max open files            unlimited            unlimited            files     \n",
  );
  // Listing /proc/self/fd holds one descriptor of its own, which is not counted.
  await Deno.mkdir(join(dir.path, "fd"));
  for (const n of ["0", "1", "2", "3"]) await Deno.writeTextFile(join(dir.path, "fd", n), "");

  const mem = { rss: 41234 * 1024, heapUsed: 1, heapTotal: 2, external: 3 };
  const m = scrape({ procSelf: dir.path, memoryUsage: () => mem });
  assertEquals(m.value("process_cpu_seconds_total"), (1234 + 567) / 100);
  assertEquals(m.value("process_virtual_memory_bytes"), 18601070592);
  assertEquals(m.value("process_resident_memory_bytes"), 41234 * 1024);
  assertEquals(m.value("process_max_fds"), Infinity);
  assertEquals(m.value("process_open_fds"), 3);

  assertEquals(parseProcStat("garbage"), undefined);
  assertEquals(parseProcStat("1 (x) S 1 2 3"), undefined); // too short
  assertEquals(parseStatusRss("VmRSS: lots"), undefined);
  assertEquals(parseMaxFds("Max open files            1024                 4096   files\n"), 1024);
  assertEquals(parseMaxFds(""), undefined);
  // A stat the kernel would never write leaves cpu and virtual memory out.
  await Deno.writeTextFile(join(dir.path, "stat"), "4242 (x) S -1 -1\n");
  const partial = scrape({ procSelf: dir.path });
  assert(!partial.has("process_cpu_seconds_total"));
  assert(!partial.has("process_virtual_memory_bytes"));
  assertEquals(partial.value("process_open_fds"), 3);
});

Deno.test({
  name: "the real server: start time after the test began, fds, RSS and CPU as /proc/<pid> says",
  ignore: !ON_LINUX,
  async fn() {
    await using dir = await tempDir();
    const cfg = join(dir.path, "cfg.json");
    await Deno.writeTextFile(cfg, JSON.stringify({ cacheDir: "cache" }));
    const began = Date.now() / 1000;
    await using p = await spawnRepoxy(Deno.execPath(), [
      ...DENO_RUN,
      join(ROOT, "main.ts"),
      "serve",
      "--config",
      cfg,
      "--listen",
      "127.0.0.1:0",
    ], { cwd: dir.path });
    // Read from outside, through libc too: Deno's fs API refuses /proc without --allow-all.
    using outside = ProcReader.open()!;
    const proc = `/proc/${p.pid}`;
    const cpuOf = () => parseProcStat(outside.readText(`${proc}/stat`)!)!.cpuSeconds;
    const cpuBefore = cpuOf();
    const res = await fetch(p.url + "-/metrics");
    assertEquals(res.status, 200);
    const m = parseExposition(await res.text());
    const now = Date.now() / 1000;
    const cpuAfter = cpuOf();

    const start = m.value("process_start_time_seconds");
    assert(start > began && start < now, `${began} < ${start} < ${now}`);
    const cpu = m.value("process_cpu_seconds_total");
    assert(cpu >= cpuBefore && cpu <= cpuAfter && cpu > 0, `${cpuBefore} <= ${cpu} <= ${cpuAfter}`);
    // The server is idle apart from this one kept-alive connection, but its background jobs
    // (inventory, disk probe) may open a file between the scrape and the count: a few tries,
    // one of which must agree to within the connection the scrape itself uses.
    const tries: string[] = [];
    for (let i = 0; i < 10; i++) {
      const again = i === 0 ? m : parseExposition(await (await fetch(p.url + "-/metrics")).text());
      const fds = outside.countEntries(`${proc}/fd`)!;
      if (Math.abs(again.value("process_open_fds") - fds) <= 1) break;
      tries.push(`${again.value("process_open_fds")} vs ${fds}`);
      assert(i < 9, `process_open_fds never matched /proc/PID/fd: ${tries.join(", ")}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const rss = parseStatusRss(outside.readText(`${proc}/status`)!)!;
    assert(Math.abs(m.value("process_resident_memory_bytes") - rss) < 8 * 2 ** 20, `${rss}`);
    const limits = parseMaxFds(outside.readText(`${proc}/limits`)!);
    assertEquals(m.value("process_max_fds"), limits);
    assertEquals((await p.stop()).code, 0);
  },
});
