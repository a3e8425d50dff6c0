/**
 * The command line: `repoxy --help` lists the subcommands, each has its own
 * `--help`, and usage or config mistakes exit 2 with a message.
 */
import { COMMANDS } from "../lib/commands/mod.ts";
import { assertEquals, assertMatch } from "../lib/deps/assert.ts";
import { join } from "../lib/deps/path.ts";
import { runCli } from "./_cli.ts";
import { tempDir } from "./_helpers.ts";

Deno.test("repoxy --help lists every subcommand and each subcommand has --help", async () => {
  const top = await runCli(["--help"]);
  assertEquals(top.code, 0);
  for (const name of ["warm", "export", "import", "verify", "prune", "tls"]) {
    assertMatch(top.stdout, new RegExp(`^    ${name} +\\S`, "m"), name);
  }
  const helps = await Promise.all([...COMMANDS.keys()].map((c) => runCli([c, "--help"])));
  for (const [i, name] of [...COMMANDS.keys()].entries()) {
    assertEquals(helps[i]!.code, 0, name);
    assertMatch(helps[i]!.stdout, new RegExp(`^Usage: repoxy ${name} `), name);
    assertMatch(helps[i]!.stdout, /--config FILE/, name);
  }
});

Deno.test("subcommands reject bad flags, arguments and config with exit code 2", async () => {
  await using dir = await tempDir();
  const badConfig = join(dir.path, "bad.json");
  await Deno.writeTextFile(badConfig, JSON.stringify({ maxCacheSize: "huge" }));
  const cases: Array<[string[], RegExp]> = [
    [["warm", "--bogus"], /repoxy warm: Unknown option '--bogus'/],
    [["warm", "-d", dir.path, "-p", "linux", "hashicorp/aws"], /"linux" is not a platform/],
    [["warm", "-d", dir.path, "-j", "0", "hashicorp/aws"], /--concurrency must be a whole number/],
    [["warm", "-d", dir.path, "not an address"], /is not a provider address/],
    [
      ["warm", "-d", dir.path, "nowhere.example/a/b"],
      /registry nowhere\.example is not in "upstreams"/,
    ],
    [["export", "-d", dir.path], /missing DIR/],
    [["import", "-d", dir.path], /expected exactly one DIR/],
    [["import", "-d", dir.path, join(dir.path, "missing")], /cannot read/],
    [["prune", "-d", dir.path, "--max-size", "big"], /--max-size must be a size/],
    [["verify", "-c", badConfig], /repoxy verify: config error: .*"maxCacheSize" must be a size/],
    [["verify", "-d", dir.path, "extra"], /repoxy verify: unexpected argument "extra"/],
    [
      ["prune", "-d", dir.path, "--max-size", "1GB", "extra"],
      /repoxy prune: unexpected argument "extra"/,
    ],
  ];
  const runs = await Promise.all(cases.map(([args]) => runCli(args, { cwd: dir.path })));
  for (const [i, [args, re]] of cases.entries()) {
    assertEquals(runs[i]!.code, 2, `${args.join(" ")}: ${runs[i]!.stderr}`);
    assertMatch(runs[i]!.stderr, re, args.join(" "));
  }
});

Deno.test("repoxy warm with no arguments reads ./.terraform.lock.hcl, and says so when it is missing", async () => {
  await using dir = await tempDir();
  const missing = await runCli(["warm", "-d", join(dir.path, "cache")], { cwd: dir.path });
  assertEquals(missing.code, 2);
  assertMatch(missing.stderr, /\.\/\.terraform\.lock\.hcl does not exist/);
  await Deno.writeTextFile(join(dir.path, ".terraform.lock.hcl"), `provider "x/y" {\n}\n`);
  const broken = await runCli(["warm", "-d", join(dir.path, "cache")], { cwd: dir.path });
  assertEquals(broken.code, 2);
  assertMatch(
    broken.stderr,
    /\.terraform\.lock\.hcl:1: provider "registry\.terraform\.io\/x\/y" has no version/,
  );
});
