/**
 * Red team of the process collector: a process out of file descriptors
 * (`ulimit -n` low, a descriptor leak) is when `process_open_fds` matters;
 * a scrape then must still report it instead of leaving it out.
 */
import { assert, assertEquals } from "../lib/deps/assert.ts";
import { fromFileUrl, join } from "../lib/deps/path.ts";
import { tempDir } from "./_helpers.ts";

const ON_LINUX = Deno.build.os === "linux";
if (!ON_LINUX) {
  // deno-lint-ignore no-console
  console.log("SKIP: process_metrics_hostile_test: /proc/self readings are Linux only");
}
const ROOT = fromFileUrl(new URL("..", import.meta.url));

Deno.test({
  name: "out of descriptors (EMFILE), a scrape still reports process_open_fds = process_max_fds",
  ignore: !ON_LINUX,
  async fn() {
    await using dir = await tempDir();
    const script = join(dir.path, "exhaust.ts");
    await Deno.writeTextFile(
      script,
      `
import { Registry } from ${JSON.stringify(new URL("../lib/ops/metrics.ts", import.meta.url).href)};
import { ProcessCollector } from ${
        JSON.stringify(new URL("../lib/ops/process_metrics.ts", import.meta.url).href)
      };
const r = new Registry();
r.registerCollector(new ProcessCollector());
r.render(); // the first scrape, while descriptors are left
const held = [];
for (;;) {
  try { held.push(Deno.openSync("/dev/null")); } catch { break; }
}
const text = r.render();
const pick = (n) => text.split("\\n").find((l) => l.startsWith(n + " "))?.split(" ")[1] ?? "absent";
console.log(JSON.stringify({ held: held.length, open: pick("process_open_fds"), max: pick("process_max_fds"), cpu: pick("process_cpu_seconds_total") }));
`,
    );
    const out = await new Deno.Command("sh", {
      args: [
        "-c",
        `ulimit -n 96 && exec "$0" run -q --config "$1" --allow-read --allow-ffi "$2"`,
        Deno.execPath(),
        join(ROOT, "deno.json"),
        script,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert(out.success, stderr);
    const got = JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!);
    assert(got.held > 10, JSON.stringify(got));
    assertEquals(got.max, "96");
    // Every descriptor is in use, and the count says so (before: the series was absent).
    assert(Number(got.open) >= 95, new TextDecoder().decode(out.stdout));
    assert(got.cpu !== "absent", "cpu still read");
  },
});
