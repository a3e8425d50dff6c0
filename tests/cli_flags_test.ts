/** The command line, run as a real process. */
import { assert, assertEquals, assertMatch } from "../lib/deps/assert.ts";
import { join } from "../lib/deps/path.ts";
import { VERSION } from "../lib/base/version.ts";
import { tempDir } from "./_helpers.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;

async function repoxy(args: string[], env: Record<string, string> = {}) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-P=serve", MAIN, ...args],
    env: { NO_COLOR: "1", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("--help and --version", async () => {
  const help = await repoxy(["--help"]);
  assertEquals(help.code, 0);
  assertMatch(help.stdout, /Usage:\n\s+repoxy \[serve\] \[options\]/);
  for (const flag of ["--config", "--listen", "--cache-dir", "--offline", "--log-format"]) {
    assert(help.stdout.includes(flag), flag);
  }
  const v = await repoxy(["--version"]);
  assertEquals(v.code, 0);
  assertEquals(v.stdout.trim(), `repoxy ${VERSION}`);
});

Deno.test("bad flags and bad config exit 2 with one line naming the problem", async () => {
  await using dir = await tempDir();
  const bad = await repoxy(["--no-such-flag"]);
  assertEquals(bad.code, 2);
  assertMatch(bad.stderr, /Unknown option '--no-such-flag'/);

  const cfg = join(dir.path, "c.json");
  await Deno.writeTextFile(cfg, JSON.stringify({ listen: "nowhere" }));
  const r1 = await repoxy(["--config", cfg]);
  assertEquals(r1.code, 2);
  assertMatch(r1.stderr, /config error: .*c\.json: "listen" must be HOST:PORT/);

  await Deno.writeTextFile(
    cfg,
    JSON.stringify({ tls: { cert: "missing.pem", key: "missing.key" } }),
  );
  const r2 = await repoxy(["--config", cfg]);
  assertEquals(r2.code, 2);
  assertMatch(r2.stderr, /"tls\.cert": cannot read ".*missing\.pem"/);
  assertEquals(r2.stderr.trim().split("\n").filter((l) => l.includes("config error")).length, 1);

  const r3 = await repoxy(["--listen", "1.2.3.4"]);
  assertEquals(r3.code, 2);
  assertMatch(r3.stderr, /"--listen" must be HOST:PORT/);

  const r4 = await repoxy(["frobnicate"]);
  assertEquals(r4.code, 2);
  assertMatch(r4.stderr, /unknown command "frobnicate"/);
});
