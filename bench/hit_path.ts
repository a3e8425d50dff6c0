/**
 * `deno run -P=bench bench/hit_path.ts [--repo DIR]`: the JavaScript cost of
 * one kept metadata answer (`index.json`, `{version}.json`), in process,
 * without sockets: `app.handle(new Request(...))` in a loop, its access log
 * line formatted as text into a discarding sink. What Deno's HTTP engine adds
 * is not here (bench/metadata.ts measures the whole); this isolates what
 * Repoxy's own code costs, steadily enough on a loaded machine to compare two
 * commits (the best of several batches is reported).
 * @module
 */
import { parseArgs } from "../lib/deps/cli.ts";
import { resolve } from "../lib/deps/path.ts";

const args = parseArgs({
  args: Deno.args,
  options: { repo: { type: "string" }, n: { type: "string", default: "5000" } },
});
const root = new URL(
  `file://${resolve(args.values.repo ?? new URL("..", import.meta.url).pathname)}/`,
);
const { mirrorFixture } = await import(new URL("tests/_helpers.ts", root).href);
const { createLogger } = await import(new URL("lib/base/log.ts", root).href);

let sunk = 0;
const versions = Array.from({ length: 300 }, (_, i) => ({
  version: `${Math.floor(i / 20)}.${i % 20}.0`,
  platforms: ["darwin_amd64", "darwin_arm64", "linux_amd64", "linux_arm64", "windows_amd64"],
}));
await using f = await mirrorFixture({
  providers: [{ namespace: "hashicorp", type: "null", versions }],
  deps: { log: createLogger("text", (line: string) => sunk += line.length) },
});
const n = Number(args.values.n);
// deno-lint-ignore no-console
const out = (s: string) => console.log(s);
for (const file of ["index.json", "14.19.0.json"]) {
  const url = `http://mirror.test/registry.terraform.io/hashicorp/null/${file}`;
  const first = await f.app.handle(new Request(url));
  if (first.status !== 200) throw new Error(`${file}: ${first.status}`);
  await first.text();
  let best = Infinity;
  for (let batch = 0; batch < 15; batch++) {
    // Requests are made before the clock starts: only the handling counts.
    const reqs = Array.from({ length: n }, () => new Request(url));
    const t0 = performance.now();
    for (const req of reqs) {
      const res = await f.app.handle(req);
      if (res.status !== 200) throw new Error(`${file}: ${res.status}`);
    }
    best = Math.min(best, (performance.now() - t0) * 1000 / n);
  }
  out(`${file}: ${best.toFixed(2)} µs per kept answer (best of 15 batches of ${n})`);
}
if (sunk === 0) throw new Error("no access log lines were written");
