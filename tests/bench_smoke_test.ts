/**
 * A tiny run of `deno task bench` (bench/run.ts --smoke) so the benchmark
 * cannot rot: it must set everything up, measure every row and tear down.
 * No performance is asserted here; numbers come from the real bench only.
 */
import { assert, assertEquals } from "../lib/deps/assert.ts";
import { dirname, fromFileUrl, join } from "../lib/deps/path.ts";
import { tempDir } from "./_helpers.ts";
import { which } from "../bench/tools.ts";

const REPO = join(dirname(fromFileUrl(import.meta.url)), "..");

// Decided at module load (.ci/run installs them): without nginx, wrk or curl the
// smoke run is ignored with one SKIP line, never counted as a pass.
const BENCH_MISSING: string[] = [];
for (const p of ["nginx", "wrk", "curl"]) if (!await which(p)) BENCH_MISSING.push(p);
if (BENCH_MISSING.length > 0) {
  // deno-lint-ignore no-console
  console.log(`SKIP: bench smoke: ${BENCH_MISSING.join(", ")} not installed`);
}

Deno.test({
  name: "bench/run.ts --smoke runs end to end and fills every row",
  ignore: BENCH_MISSING.length > 0,
}, async () => {
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
  // The tools were found at load, so a bench that skips is a failure, not a
  // pass; a "SKIP: Go client rows" line alone does not skip the checks below.
  assert(!stdout.startsWith("SKIP bench:"), stdout);
  const result = JSON.parse(await Deno.readTextFile(json)) as {
    rows: Array<{ measure: string; repoxy: string; baseline: string; ratio: string }>;
  };
  const measures = result.rows.map((r) => r.measure).join("\n");
  for (
    const expected of [
      "Warm archive, 1 client, curl default: Repoxy HTTP/1.1 (default) vs nginx HTTP/1.1",
      "Warm archive, 1 client, curl default: Repoxy h2 (tls.http2) vs nginx h2",
      "Warm archive, 1 client, Go client: Repoxy HTTP/1.1 (default) vs nginx HTTP/1.1",
      "Warm index.json",
      "Warm {version}.json",
      "Cold miss, time to first byte",
      "Cold miss, total time",
      "Peak RSS",
      "Protocol default clients get",
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
  // With the RGW of tests/run.ts: the fleet rows (bench/fleet.ts), one fetch for the fleet.
  if (!stdout.includes("SKIP: fleet rows")) {
    for (
      const expected of [
        "Fleet on S3: warm archive from the local tier",
        "(vs the same file from Repoxy on disk only)",
        "Fleet on S3: warm archive from the bucket",
        "Fleet on S3: cold miss, total time",
      ]
    ) {
      assert(measures.includes(expected), `missing row "${expected}" in:\n${measures}`);
    }
    const shapes = result.rows.filter((r) => / cold clients × \d+ replicas/.test(r.measure));
    assert(shapes.length > 0, `no fleet fetch rows in:\n${measures}`);
    for (const r of shapes) assert(r.repoxy.startsWith("1 fetch,"), `${r.measure}: ${r.repoxy}`);
  }
  for (const r of result.rows) {
    if (r.ratio !== "-") assert(/^[+-]?[\d.]+( ms)?$/.test(r.ratio), `${r.measure}: ${r.ratio}`);
  }
  // curl (and the Go client, when Go is installed) negotiate by default: HTTP/1.1
  // from Repoxy's default and from nginx without http2, h2 where it is offered.
  const proto = result.rows.find((r) => r.measure.startsWith("Protocol default clients get"))!;
  const go = !stdout.includes("SKIP: Go client rows");
  const want = go ? "HTTP/1.1, HTTP/1.1 / h2, h2" : "HTTP/1.1 / h2";
  assertEquals([proto.repoxy, proto.baseline], [want, want]);
  assert(stdout.includes("| Measure |"), "the table is printed");
});
