/**
 * README's "Dependencies and licences" (issue 15: every dependency listed
 * with its licence) against deno.json: each npm import is named there, and
 * where the runtime table gives a version, it is the pinned one.
 * @module
 */
import { assert } from "../lib/deps/assert.ts";

Deno.test("every npm import in deno.json is in README's licence list, at its pinned version", async () => {
  const root = new URL("../", import.meta.url);
  const imports: Record<string, string> =
    JSON.parse(await Deno.readTextFile(new URL("deno.json", root))).imports;
  const readme = await Deno.readTextFile(new URL("README.md", root));
  const start = readme.indexOf("## Dependencies and licences");
  assert(start >= 0, "README has the section");
  const section = readme.slice(start, readme.indexOf("\n## ", start + 1));
  const rows = section.split("\n").filter((l) => l.startsWith("| `"));
  const names = (row: string) => [...row.matchAll(/`([^`]+)`/g)].map((m) => m[1]!);
  const npm = Object.entries(imports).filter(([, spec]) => spec.startsWith("npm:"));
  assert(npm.length >= 5, JSON.stringify(imports));
  for (const [name, spec] of npm) {
    const version = spec.slice(spec.lastIndexOf("@") + 1);
    const covers = (n: string) =>
      n === name || (n.endsWith("*") && name.startsWith(n.slice(0, -1)));
    const row = rows.find((r) => names(r).some(covers));
    if (row) assert(row.includes(` ${version}`), `README lists ${name} at ${version}: ${row}`);
    else assert(section.includes(`\`${name}\``), `README's licence list names ${name}`);
  }
});
