/**
 * scripts/compile.ts: the baked flags, the denort check and its message, and
 * one real `deno compile` run (with the wrong runtime on purpose, since the
 * right one cannot be downloaded here) to prove the flags are accepted.
 */
import { assert, assertEquals, assertMatch } from "../lib/deps/assert.ts";
import { fromFileUrl, join } from "../lib/deps/path.ts";
import {
  BAKED_ENV,
  checkDenort,
  compileArgs,
  denortHelp,
  denortZipPath,
  outputPath,
  TARGETS,
} from "../scripts/compile.ts";
import { exists, tempDir } from "./_helpers.ts";

const ROOT = fromFileUrl(new URL("..", import.meta.url));
const SCRIPT = join(ROOT, "scripts", "compile.ts");

Deno.test("compileArgs: locked, offline, and only the permissions Repoxy uses", () => {
  const args = compileArgs("aarch64-apple-darwin", "/o/repoxy", "/src/main.ts");
  assertEquals(args[0], "compile");
  for (const f of ["--frozen", "--no-remote", "--no-prompt", "--allow-net", "--allow-read"]) {
    assert(args.includes(f), f);
  }
  assert(args.includes("--allow-write"));
  assert(args.includes(`--allow-env=${BAKED_ENV.join(",")}`));
  assertEquals(args.slice(-5), [
    "--target",
    "aarch64-apple-darwin",
    "--output",
    "/o/repoxy",
    "/src/main.ts",
  ]);
  for (const a of args) {
    // run: git only (modules); never every program.
    assert(!/^(-A|--allow-all|--allow-run(?!=git$)|--allow-sys|--allow-import)/.test(a), a);
  }
  assertEquals(BAKED_ENV.includes("REPOXY_*"), true);
});

Deno.test("outputPath and TARGETS cover the five release platforms", () => {
  assertEquals(TARGETS.length, 5);
  assertEquals(outputPath("/d", "x86_64-unknown-linux-gnu", true), "/d/repoxy");
  assertEquals(outputPath("/d", "x86_64-pc-windows-msvc", true), "/d/repoxy.exe");
  assertEquals(
    outputPath("/d", "x86_64-pc-windows-msvc", false),
    "/d/repoxy-x86_64-pc-windows-msvc.exe",
  );
  assertEquals(outputPath("/d", "aarch64-apple-darwin", false), "/d/repoxy-aarch64-apple-darwin");
});

Deno.test("checkDenort: DENORT_BIN, then a seeded zip, then a reachable download", async () => {
  const zip = denortZipPath("/dd", "2.9.6", "x86_64-unknown-linux-gnu");
  assertEquals(zip, "/dd/dl/release/v2.9.6/denort-x86_64-unknown-linux-gnu.zip");
  const files = new Set(["/bin/denort", zip]);
  const probed: string[] = [];
  const env = (over: Partial<Parameters<typeof checkDenort>[1]> = {}) => ({
    denoDir: "/dd",
    denoVersion: "2.9.6",
    denortBin: undefined,
    isFile: (p: string) => Promise.resolve(files.has(p)),
    reachable: (u: string) => {
      probed.push(u);
      return Promise.resolve(false);
    },
    ...over,
  });

  assertEquals(await checkDenort(["x86_64-unknown-linux-gnu"], env({ denortBin: "/bin/denort" })), [
    { ok: true, via: "DENORT_BIN", detail: "/bin/denort" },
  ]);
  const badBin = await checkDenort(["x86_64-unknown-linux-gnu"], env({ denortBin: "/nope" }));
  assertEquals(badBin[0]!.ok, false);
  const twoWithBin = await checkDenort([...TARGETS], env({ denortBin: "/bin/denort" }));
  assert(twoWithBin.every((c) => !c.ok && /one runtime binary serves one target/.test(c.problem)));

  const all = await checkDenort(["x86_64-unknown-linux-gnu", "aarch64-apple-darwin"], env());
  assertEquals(all[0], { ok: true, via: "zip", detail: zip });
  assertEquals(all[1]!.ok, false);
  assertEquals(probed, ["https://dl.deno.land/release/v2.9.6/denort-aarch64-apple-darwin.zip"]);

  const online = await checkDenort(
    ["aarch64-apple-darwin"],
    env({ reachable: () => Promise.resolve(true) }),
  );
  assertEquals(online[0]!.ok && online[0]!.via, "download");
});

Deno.test("denortHelp names DENORT_BIN, the exact zip paths and where to get them", () => {
  const text = denortHelp(["x86_64-unknown-linux-gnu", "x86_64-pc-windows-msvc"], "/dd", "2.9.6");
  assertMatch(text, /DENORT_BIN=/);
  assertMatch(text, /\/dd\/dl\/release\/v2\.9\.6\/denort-x86_64-unknown-linux-gnu\.zip/);
  assertMatch(text, /\/dd\/dl\/release\/v2\.9\.6\/denort-x86_64-pc-windows-msvc\.zip/);
  assertMatch(
    text,
    /https:\/\/dl\.deno\.land\/release\/v2\.9\.6\/denort-x86_64-pc-windows-msvc\.zip/,
  );
  assertMatch(text, /deno bundle --platform deno/);
});

function runScript(args: string[], env: Record<string, string>, outDir: string) {
  return new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--frozen",
      "--allow-read",
      `--allow-write=${outDir}`,
      "--allow-run",
      "--allow-env",
      "--allow-net=dl.deno.land",
      SCRIPT,
      "--out-dir",
      outDir,
      ...args,
    ],
    cwd: ROOT,
    env: { NO_COLOR: "1", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
}

Deno.test("compile script: a missing DENORT_BIN fails before compiling, with the explanation", async () => {
  await using dir = await tempDir();
  const out = await runScript([], { DENORT_BIN: join(dir.path, "no-denort") }, dir.path);
  const stderr = new TextDecoder().decode(out.stderr);
  assertEquals(out.code, 1, stderr);
  assertMatch(stderr, /DENORT_BIN is set to ".*no-denort", which is not a file/);
  assertMatch(stderr, /dl\/release\/v\d+\.\d+\.\d+\/denort-[a-z0-9_-]+\.zip/);
  assertEquals(await exists(join(dir.path, "repoxy")), false);
});

Deno.test("compile script: deno compile accepts the flags; a full deno as runtime is caught", async () => {
  await using dir = await tempDir();
  // The only runtime at hand is deno itself, which makes a binary that acts as
  // deno: the script must notice and refuse it.
  const out = await runScript([], { DENORT_BIN: Deno.execPath() }, dir.path);
  const stderr = new TextDecoder().decode(out.stderr);
  assertEquals(out.code, 1, stderr);
  assertMatch(stderr, /Compile .*main\.ts/);
  assertMatch(stderr, /--version printed "deno /);
  assertMatch(stderr, /not denort/);
  assertEquals(await exists(join(dir.path, "repoxy")), false, "a wrong binary must not be left");
});
