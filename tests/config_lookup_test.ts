/**
 * Config file lookup order, with an injected filesystem and environment.
 */
import { buildConfig, ConfigError } from "../lib/config/config.ts";
import { type ConfigLookupEnv, findConfigFile } from "../lib/config/lookup.ts";
import { assertEquals, assertRejects } from "../lib/deps/assert.ts";

function fakeEnv(opts: {
  files?: string[];
  env?: Record<string, string>;
  cwd?: string;
  execPath?: string;
  standalone?: boolean;
  os?: typeof Deno.build.os;
}): ConfigLookupEnv & { probed: string[] } {
  const probed: string[] = [];
  const files = new Set(opts.files ?? []);
  return {
    probed,
    getEnv: (n) => opts.env?.[n],
    cwd: () => opts.cwd ?? "/home/me/project",
    exists: (p) => {
      probed.push(p);
      return Promise.resolve(files.has(p));
    },
    execPath: () => opts.execPath ?? "/opt/repoxy/bin/repoxy",
    standalone: opts.standalone ?? true,
    os: opts.os ?? "linux",
  };
}

const ALL = [
  "/srv/flag.json",
  "/srv/env.json",
  "/home/me/project/repoxy.json",
  "/etc/repoxy/config.json",
  "/opt/repoxy/bin/config.json",
];

Deno.test("findConfigFile: --config wins over everything, relative to the cwd", async () => {
  const env = fakeEnv({ files: ALL, env: { REPOXY_CONFIG: "/srv/env.json" } });
  assertEquals(await findConfigFile("conf/x.json", env), {
    path: "/home/me/project/conf/x.json",
    source: "flag",
  });
  // An explicit choice is returned without probing: reading it reports a missing file.
  assertEquals(env.probed, []);
});

Deno.test("findConfigFile: REPOXY_CONFIG comes next, even when the file is missing", async () => {
  const env = fakeEnv({ files: [], env: { REPOXY_CONFIG: "rel/env.json" } });
  assertEquals(await findConfigFile(undefined, env), {
    path: "/home/me/project/rel/env.json",
    source: "env",
  });
  const empty = fakeEnv({ files: ["/etc/repoxy/config.json"], env: { REPOXY_CONFIG: "" } });
  assertEquals((await findConfigFile(undefined, empty))?.source, "etc");
});

Deno.test("findConfigFile: then ./repoxy.json, /etc/repoxy/config.json, next to the binary", async () => {
  assertEquals(await findConfigFile(undefined, fakeEnv({ files: ALL })), {
    path: "/home/me/project/repoxy.json",
    source: "cwd",
  });
  assertEquals(await findConfigFile(undefined, fakeEnv({ files: ALL.slice(3) })), {
    path: "/etc/repoxy/config.json",
    source: "etc",
  });
  const exe = fakeEnv({ files: ALL.slice(4) });
  assertEquals(await findConfigFile(undefined, exe), {
    path: "/opt/repoxy/bin/config.json",
    source: "exe",
  });
  assertEquals(exe.probed, [
    "/home/me/project/repoxy.json",
    "/etc/repoxy/config.json",
    "/opt/repoxy/bin/config.json",
  ]);
});

Deno.test("findConfigFile: next to the executable only in a compiled binary; no /etc on Windows", async () => {
  // Under `deno run` the executable is deno: its directory is not Repoxy's.
  const run = fakeEnv({ files: ALL.slice(4), standalone: false });
  assertEquals(await findConfigFile(undefined, run), undefined);
  assertEquals(run.probed, ["/home/me/project/repoxy.json", "/etc/repoxy/config.json"]);

  const win = fakeEnv({ files: ["/etc/repoxy/config.json"], os: "windows" });
  assertEquals(await findConfigFile(undefined, win), undefined);
  assertEquals(win.probed.includes("/etc/repoxy/config.json"), false);
});

Deno.test("findConfigFile: real filesystem, a present file in the cwd is found", async () => {
  const dir = await Deno.makeTempDir({ prefix: "repoxy-lookup-" });
  try {
    const env = {
      ...fakeEnv({ cwd: dir, standalone: false }),
      exists: async (p: string) => {
        try {
          await Deno.stat(p);
          return true;
        } catch {
          return false;
        }
      },
    };
    const before = await findConfigFile(undefined, env);
    assertEquals(before?.source === "cwd", false);
    await Deno.writeTextFile(`${dir}/repoxy.json`, "{}");
    assertEquals(await findConfigFile(undefined, env), {
      path: `${dir}/repoxy.json`,
      source: "cwd",
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("an env: token the build may not read is a config error that says what to do", async () => {
  const env = {
    readTextFile: () => Promise.reject(new Error("no")),
    getEnv: (n: string): string | undefined => {
      if (n.startsWith("REPOXY_")) return "tok";
      throw new Deno.errors.NotCapable(`Requires env access to "${n}"`);
    },
    cwd: () => "/",
  };
  await assertRejects(
    () =>
      buildConfig(
        { cacheDir: "/c", upstreams: { "tfe.example.com": { token: "env:TFE_TOKEN" } } },
        {},
        "/",
        env,
      ),
    (e: unknown) =>
      e instanceof ConfigError && /TFE_TOKEN/.test(e.message) &&
      /REPOXY_TFE_TOKEN/.test(e.message) && /file:/.test(e.message),
  );
  const ok = await buildConfig(
    { cacheDir: "/c", upstreams: { "tfe.example.com": { token: "env:REPOXY_TFE_TOKEN" } } },
    {},
    "/",
    env,
  );
  assertEquals(ok.upstreams.get("tfe.example.com")?.token, "tok");
});
