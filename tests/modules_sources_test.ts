/**
 * Module archive sources the issue names beside `.tar.gz`: a `.zip` and an
 * archive typed by go-getter's `?archive=` (a URL with no extension, such
 * as a tarball API): fetched once, unpacked with every entry checked,
 * repacked and served; a hostile zip stores nothing.
 * @module
 */
import { assert, assertEquals, assertMatch } from "../lib/deps/assert.ts";
import { join } from "../lib/deps/path.ts";
import { makeTarGz, startFakeModuleRegistry } from "./fake_module_registry.ts";
import { bytesOf, makeTestApp, tempDir } from "./_helpers.ts";
import { makeZip } from "./_zip.ts";

const H = "registry.terraform.io";
const base = `/v1/modules/${H}/example/store/aws`;

/** The files of a .tar.gz as path → content, read by the system tar (not our reader). */
async function untar(bytes: Uint8Array, into: string): Promise<Record<string, string>> {
  await Deno.mkdir(into, { recursive: true });
  await Deno.writeFile(`${into}.tgz`, bytes);
  const out = await new Deno.Command("tar", { args: ["-xzf", `${into}.tgz`, "-C", into] }).output();
  assert(out.success, "system tar reads the archive");
  const files: Record<string, string> = {};
  const walk = async (rel: string) => {
    for await (const e of Deno.readDir(rel ? join(into, rel) : into)) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory) await walk(r);
      else files[r] = await Deno.readTextFile(join(into, r));
    }
  };
  await walk("");
  return files;
}

Deno.test("zip and ?archive= module sources: fetched once, unpacked, repacked, served; a zip escaping its directory stores nothing", async () => {
  await using dir = await tempDir();
  await using reg = await startFakeModuleRegistry();
  reg.archives.set(
    "store.zip",
    await makeZip([
      { name: "store/main.tf", data: "# zipped\n", method: "deflate" },
      { name: "top.tf", data: "# top\n" },
    ]),
  );
  reg.archives.set("tarball", await makeTarGz([{ name: "api.tf", content: "# typed\n" }]));
  reg.archives.set("evil.zip", await makeZip([{ name: "../outside.tf", data: "x\n" }]));
  reg.modules.set(
    "example/store/aws",
    new Map([
      ["1.0.0", `${reg.url}archives/store.zip//store`],
      ["2.0.0", `${reg.url}archives/tarball?archive=tar.gz`],
      ["3.0.0", `${reg.url}archives/evil.zip`],
    ]),
  );
  const cache = join(dir.path, "cache");
  const t = await makeTestApp(undefined, cache, {
    upstreams: { [H]: { url: reg.url } },
    egressAllow: [new URL(reg.url).host],
  });
  try {
    const d = await t.get(`${base}/1.0.0/download`);
    assertEquals(d.status, 204);
    assertEquals(d.headers.get("x-terraform-get"), `/${base.slice(1)}/1.0.0/module.tar.gz//store`);
    const zipped = await bytesOf(await t.get(`${base}/1.0.0/module.tar.gz`));
    assertEquals(await untar(zipped, join(dir.path, "a")), {
      "store/main.tf": "# zipped\n",
      "top.tf": "# top\n",
    });
    assertEquals(await bytesOf(await t.get(`${base}/1.0.0/module.tar.gz`)), zipped);
    assertEquals(reg.count("/archives/store.zip"), 1, "zip fetched once");

    const typed = await t.get(`${base}/2.0.0/download`);
    assertEquals(typed.status, 204, "an extension-less URL typed by ?archive= is cached");
    assertEquals(typed.headers.get("x-terraform-get"), `/${base.slice(1)}/2.0.0/module.tar.gz`);
    const tarball = await bytesOf(await t.get(`${base}/2.0.0/module.tar.gz`));
    assertEquals(await untar(tarball, join(dir.path, "b")), { "api.tf": "# typed\n" });
    assertEquals(reg.count("/archives/tarball"), 1);

    await bytesOf(await t.get(`${base}/3.0.0/download`));
    const evil = await t.get(`${base}/3.0.0/module.tar.gz`);
    assertEquals(evil.status, 502);
    assertMatch(new TextDecoder().decode(await bytesOf(evil)), /leaves the archive's directory/);
    assert(
      !(await Deno.stat(join(cache, "modules", H, "example/store/aws/3.0.0.json")).catch(
        () => null,
      )),
    );
    assert(!(await Deno.stat(join(dir.path, "outside.tf")).catch(() => null)));
    assert(!(await Deno.stat(join(cache, "outside.tf")).catch(() => null)));
    // The work tree and the half-made archive of every fetch are gone, the failed one's too.
    await t.app.settle();
    const left = [];
    for await (const proc of Deno.readDir(join(cache, "tmp"))) {
      if (!proc.isDirectory) continue; // the process's lock file
      for await (const e of Deno.readDir(join(cache, "tmp", proc.name))) left.push(e.name);
    }
    assertEquals(left, []);
  } finally {
    await t.app.close();
  }
});
