/**
 * Driving the real `terraform` CLI in end-to-end tests.
 * @module
 */
import { join } from "../lib/deps/path.ts";

let cached: string | null | undefined;

/** Path of a usable terraform binary, or null (tests then print a SKIP line). */
export async function findTerraform(): Promise<string | null> {
  if (cached !== undefined) return cached;
  try {
    const out = await new Deno.Command("terraform", {
      args: ["version"],
      stdout: "piped",
      stderr: "piped",
    })
      .output();
    cached = out.success ? "terraform" : null;
  } catch {
    cached = null;
  }
  return cached;
}

/** Prints the one SKIP line a test prints when terraform is absent. */
export function skip(test: string, why: string): void {
  // deno-lint-ignore no-console
  console.log(`SKIP: ${test}: ${why}`);
}

/** Result of one terraform run. */
export interface TerraformRun {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs terraform in `cwd` with an isolated CLI config and environment: no
 * plugin cache, no checkpoint calls, the test CA trusted.
 */
export async function runTerraform(
  args: string[],
  opts: { cwd: string; cliConfig: string; caCertFile?: string; home: string },
): Promise<TerraformRun> {
  const cliConfigPath = join(opts.home, "terraformrc");
  await Deno.writeTextFile(cliConfigPath, opts.cliConfig);
  const env: Record<string, string> = {
    PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
    HOME: opts.home,
    TF_CLI_CONFIG_FILE: cliConfigPath,
    CHECKPOINT_DISABLE: "1",
    TF_IN_AUTOMATION: "1",
    TF_REGISTRY_CLIENT_TIMEOUT: "15",
  };
  if (opts.caCertFile) env.SSL_CERT_FILE = opts.caCertFile;
  const out = await new Deno.Command("terraform", {
    args,
    cwd: opts.cwd,
    env,
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** A provider block of `.terraform.lock.hcl`. */
export interface LockedProvider {
  version: string;
  hashes: string[];
}

/** Parses the provider blocks of a `.terraform.lock.hcl` (as terraform writes it). */
export function parseLockFile(text: string): Map<string, LockedProvider> {
  const out = new Map<string, LockedProvider>();
  const re = /provider "([^"]+)" \{([\s\S]*?)\n\}/g;
  for (const m of text.matchAll(re)) {
    const body = m[2]!;
    const version = /\bversion\s*=\s*"([^"]+)"/.exec(body)?.[1] ?? "";
    const hashesBlock = /hashes\s*=\s*\[([\s\S]*?)\]/.exec(body)?.[1] ?? "";
    const hashes = [...hashesBlock.matchAll(/"([^"]+)"/g)].map((h) => h[1]!);
    out.set(m[1]!, { version, hashes });
  }
  return out;
}

/** A `main.tf` requiring the given providers at exact versions. */
export function requiredProvidersTf(
  providers: Array<{ name: string; source: string; version: string }>,
): string {
  const lines = providers.map((p) =>
    `    ${p.name} = {\n      source  = "${p.source}"\n      version = "${p.version}"\n    }`
  );
  return `terraform {\n  required_providers {\n${lines.join("\n")}\n  }\n}\n`;
}
