/**
 * The CLI as a process: JSON log lines, config lookup reported at start-up,
 * `--listen 127.0.0.1:0`, and a clean exit on SIGTERM.
 */
import { assert, assertEquals, assertMatch } from "../lib/deps/assert.ts";
import { fromFileUrl, join } from "../lib/deps/path.ts";
import { spawnRepoxy } from "./_process.ts";
import { tempDir } from "./_helpers.ts";

const ROOT = fromFileUrl(new URL("..", import.meta.url));
const MAIN = join(ROOT, "main.ts");
const DENO_RUN = ["run", "-q", "--frozen", "--config", join(ROOT, "deno.json"), "-P=serve"];

function assertJsonLines(lines: string[], where: string): Record<string, unknown>[] {
  const records: Record<string, unknown>[] = [];
  for (const line of lines) {
    let rec: unknown;
    try {
      rec = JSON.parse(line);
    } catch {
      throw new Error(`${where}: not a JSON line: ${JSON.stringify(line)}`);
    }
    assert(
      rec && typeof rec === "object" && !Array.isArray(rec),
      `${where}: not an object: ${line}`,
    );
    const r = rec as Record<string, unknown>;
    assertMatch(String(r.ts), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert(["debug", "info", "warn", "error"].includes(String(r.level)), line);
    assert(typeof r.msg === "string" && r.msg !== "", line);
    records.push(r);
  }
  return records;
}

Deno.test("--log-format json: every line the process writes is one JSON object", async () => {
  await using dir = await tempDir();
  const cfg = join(dir.path, "cfg.json");
  await Deno.writeTextFile(cfg, JSON.stringify({ cacheDir: "cache" }));
  // Leftovers make start-up log a warning too: that line must be JSON as well.
  await Deno.mkdir(join(dir.path, "cache", "tmp"), { recursive: true });
  await Deno.writeTextFile(join(dir.path, "cache", "tmp", "x.tmp-1"), "partial");

  await using p = await spawnRepoxy(Deno.execPath(), [
    ...DENO_RUN,
    MAIN,
    "serve",
    "--config",
    cfg,
    "--log-format",
    "json",
    "--listen",
    "127.0.0.1:0",
  ], { cwd: dir.path });
  assertMatch(p.url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
  assert(!p.url.endsWith(":0/"), "the real port is reported, not 0");
  for (const path of ["-/healthz", "-/readyz", "nothing-here"]) {
    await (await fetch(p.url + path)).arrayBuffer();
  }
  const status = await p.stop("SIGTERM");
  assertEquals(status.code, 0);
  assertEquals(status.success, true);

  assertEquals(assertJsonLines(p.stdout, "stdout"), []);
  const records = assertJsonLines(p.stderr, "stderr");
  const msgs = records.map((r) => r.msg);
  assertEquals(msgs.filter((m) => m === "request").length, 3);
  assert(msgs.includes("removed leftover temp files from an earlier run"));
  assert(msgs.includes("shutting down"));
  const started = records.find((r) => r.msg === "repoxy started")!;
  assertEquals(started.config, cfg);
  assertEquals(started.configSource, "flag");
  assertEquals(started.cacheDir, join(dir.path, "cache"));
  const snippet = records.find((r) => String(r.msg).startsWith("client configuration"));
  assertMatch(String(snippet?.snippet), new RegExp(`"providers\\.v1" = "${p.url}v1/providers/`));
});

Deno.test("--log-format json: a config error is one JSON line and exit code 2", async () => {
  await using dir = await tempDir();
  const out = await new Deno.Command(Deno.execPath(), {
    args: [...DENO_RUN, MAIN, "--config", join(dir.path, "missing.json"), "--log-format", "json"],
    cwd: dir.path,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assertEquals(out.code, 2);
  assertEquals(new TextDecoder().decode(out.stdout), "");
  const lines = new TextDecoder().decode(out.stderr).trimEnd().split("\n");
  const [rec] = assertJsonLines(lines, "stderr");
  assertEquals(lines.length, 1);
  assertEquals(rec!.msg, "config error");
  assertMatch(String(rec!.error), /missing\.json/);
});

Deno.test("config lookup: ./repoxy.json in the working directory, then REPOXY_CONFIG over it", async () => {
  await using dir = await tempDir();
  await Deno.writeTextFile(join(dir.path, "repoxy.json"), JSON.stringify({ cacheDir: "from-cwd" }));
  await Deno.writeTextFile(join(dir.path, "env.json"), JSON.stringify({ cacheDir: "from-env" }));
  const args = [...DENO_RUN, MAIN, "--listen", "127.0.0.1:0"];

  {
    await using p = await spawnRepoxy(Deno.execPath(), args, { cwd: dir.path });
    assertEquals((await p.stop()).code, 0);
    // Text mode: the start line names the file and the rule that found it.
    const line = p.stderr.find((l) => l.includes(" INFO repoxy started "))!;
    assert(line.includes(` config=${join(dir.path, "repoxy.json")} configSource=cwd`), line);
    assert(line.includes(` cacheDir=${join(dir.path, "from-cwd")} `), line);
    // ... followed by the banner with the client snippet.
    assert(p.stderr.some((l) => l.includes(`"providers.v1" = "${p.url}v1/providers/`)));
  }
  {
    await using p = await spawnRepoxy(Deno.execPath(), args, {
      cwd: dir.path,
      env: { REPOXY_CONFIG: "env.json" },
    });
    assertEquals((await p.stop()).code, 0);
    const line = p.stderr.find((l) => l.includes(" INFO repoxy started "))!;
    assert(line.includes(` config=${join(dir.path, "env.json")} configSource=env`), line);
  }
});
