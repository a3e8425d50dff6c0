/**
 * The layout of lib/ as its folder READMEs describe it: every folder says
 * what it may import ("May import: …"), and no module imports outside that,
 * imports in a circle, or lacks its module doc.
 */
import { assert, assertEquals } from "../lib/deps/assert.ts";
import { dirname, join, relative, resolve } from "../lib/deps/path.ts";

const LIB = resolve(new URL("../lib", import.meta.url).pathname);
// Static imports and re-exports, and import() of a module loaded when first needed.
const IMPORT =
  /(?:(?:import|export)\s[^'"]*?from\s*|\bimport\s*\(\s*)["'](\.{1,2}\/[^"']+\.ts)["']/g;

async function libFiles(): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string) => {
    for await (const e of Deno.readDir(dir)) {
      const p = join(dir, e.name);
      if (e.isDirectory) await walk(p);
      else if (e.name.endsWith(".ts")) out.push(p);
    }
  };
  await walk(LIB);
  return out.sort();
}

/** "app" for lib/app.ts, else the folder name. */
function layerOf(path: string): string {
  const rel = relative(LIB, path);
  return rel.includes("/") ? rel.split("/")[0]! : rel.replace(/\.ts$/, "");
}

async function importsOf(path: string): Promise<string[]> {
  const text = await Deno.readTextFile(path);
  return [...text.matchAll(IMPORT)].map((m) => resolve(dirname(path), m[1]!));
}

Deno.test("every lib/ folder documents what it owns and may import, and keeps to it", async () => {
  const allowed = new Map<string, Set<string>>();
  for await (const e of Deno.readDir(LIB)) {
    if (!e.isDirectory) continue;
    const readme = await Deno.readTextFile(join(LIB, e.name, "README.md"));
    assert(/^Owns: /m.test(readme), `lib/${e.name}/README.md says what it owns`);
    // A paragraph of its own (formatting may wrap it).
    const at = readme.indexOf("\nMay import: ");
    assert(at >= 0, `lib/${e.name}/README.md has a "May import:" paragraph`);
    const para = readme.slice(at + "\nMay import: ".length).split("\n\n")[0]!;
    allowed.set(e.name, new Set(para.split(",").map((s) => s.trim())));
  }
  const wrong: string[] = [];
  for (const file of await libFiles()) {
    const from = layerOf(file);
    if (from === "app") continue; // the wiring may use every folder but commands
    for (const target of await importsOf(file)) {
      if (!target.startsWith(LIB)) {
        // Only version.ts reads deno.json (its one place for the version).
        if (!target.endsWith("deno.json")) wrong.push(`${relative(LIB, file)} -> ${target}`);
        continue;
      }
      const to = layerOf(target);
      if (to !== from && !allowed.get(from)?.has(to)) {
        wrong.push(`${relative(LIB, file)} -> ${relative(LIB, target)}`);
      }
    }
  }
  assertEquals(wrong, [], `imports outside what the folder README allows:\n${wrong.join("\n")}`);
});

Deno.test("lib/app.ts imports no command, and no lib/ module imports in a circle", async () => {
  const files = await libFiles();
  const graph = new Map<string, string[]>();
  for (const f of files) graph.set(f, (await importsOf(f)).filter((t) => t.startsWith(LIB)));
  assertEquals(
    graph.get(join(LIB, "app.ts"))!.filter((t) => layerOf(t) === "commands"),
    [],
  );
  // Depth-first search for a back edge.
  const state = new Map<string, "open" | "done">();
  const circle: string[] = [];
  const visit = (f: string, stack: string[]): boolean => {
    if (state.get(f) === "done") return false;
    if (state.get(f) === "open") {
      circle.push(...stack.slice(stack.indexOf(f)), f);
      return true;
    }
    state.set(f, "open");
    for (const t of graph.get(f) ?? []) if (visit(t, [...stack, f])) return true;
    state.set(f, "done");
    return false;
  };
  for (const f of files) if (visit(f, [])) break;
  assertEquals(circle.map((f) => relative(LIB, f)), []);
});

Deno.test("every lib/ module starts with a module doc", async () => {
  const missing: string[] = [];
  for (const f of await libFiles()) {
    const text = await Deno.readTextFile(f);
    if (!text.startsWith("/**") || !/@module/.test(text.slice(0, text.indexOf("*/") + 2))) {
      missing.push(relative(LIB, f));
    }
  }
  assertEquals(missing, []);
});
