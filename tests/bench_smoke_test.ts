/**
 * A tiny run of `deno task bench` (bench/run.ts --smoke) so the benchmark
 * cannot rot: it must set everything up, measure every row and tear down.
 * No performance is asserted here; numbers come from the real bench only.
 */
import { assert, assertEquals } from "../lib/deps/assert.ts";
import { dirname, fromFileUrl, join } from "../lib/deps/path.ts";
import { tempDir } from "./_helpers.ts";

const REPO = join(dirname(fromFileUrl(import.meta.url)), "..");

Deno.test("bench/run.ts --smoke runs end to end and fills every row", async () => {
  await using dir = await tempDir();
  const json = join(dir.path, "smoke.json");
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-P=bench",
      "bench/run.ts",
      "--smoke",
      "--out",
      join(dir.path, "smoke.md"),
      "--json",
      json,
    ],
    cwd: REPO,
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(180_000),
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  assert(out.success, `bench failed (${out.code}):\n${stdout}\n${stderr}`);
  if (stdout.startsWith("SKIP")) {
    // deno-lint-ignore no-console
    console.log(stdout.trim());
    return;
  }
  const result = JSON.parse(await Deno.readTextFile(json)) as {
    rows: Array<{ measure: string; repoxy: string; baseline: string; ratio: string }>;
  };
  const measures = result.rows.map((r) => r.measure).join("\n");
  for (
    const expected of [
      "Warm archive, 1 client",
      "Warm index.json",
      "Warm {version}.json",
      "Cold miss, time to first byte",
      "Cold miss, total time",
      "Peak RSS",
      "HTTP/2 negotiated",
    ]
  ) {
    assert(measures.includes(expected), `missing row "${expected}" in:\n${measures}`);
  }
  // With terraform installed: cold init through both protocols vs direct (bench/cold_init.ts).
  if (measures.includes("terraform init")) {
    for (const mode of ["network mirror", "host block"]) {
      assert(
        measures.includes(`Cold terraform init, 2 providers, ${mode}`),
        `missing cold init row (${mode}) in:\n${measures}`,
      );
    }
  }
  for (const r of result.rows) {
    if (r.ratio !== "-") assert(/^[+-]?[\d.]+( ms)?$/.test(r.ratio), `${r.measure}: ${r.ratio}`);
  }
  assertEquals(result.rows.find((r) => r.measure.startsWith("HTTP/2"))?.repoxy, "yes");
  assert(stdout.includes("| Measure |"), "the table is printed");
});
