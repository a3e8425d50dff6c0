/**
 * Running the real Terraform CLI in tests, isolated from the user's config and
 * from the internet. When `terraform` is not installed, {@link terraformOrSkip}
 * prints one `SKIP:` line per test file and the caller skips only the steps
 * that need it.
 * @module
 */
import { join } from "../lib/deps/path.ts";

let found: Promise<string | undefined> | undefined;
let skipPrinted = false;

async function locate(): Promise<string | undefined> {
  const candidates = [Deno.env.get("TERRAFORM_BIN"), "terraform"].filter((x): x is string => !!x);
  for (const bin of candidates) {
    try {
      const out = await new Deno.Command(bin, { args: ["version"], stdout: "null", stderr: "null" })
        .output();
      if (out.success) return bin;
    } catch { /* not installed */ }
  }
  return undefined;
}

/** The terraform binary, or undefined after printing (once) why the step is skipped. */
export async function terraformOrSkip(what: string): Promise<string | undefined> {
  found ??= locate();
  const bin = await found;
  if (!bin && !skipPrinted) {
    skipPrinted = true;
    // deno-lint-ignore no-console
    console.log(`SKIP: terraform is not installed; not running ${what} (set TERRAFORM_BIN)`);
  }
  return bin;
}

/** Result of a terraform run. */
export interface TfRun {
  code: number;
  output: string;
}

/**
 * Runs terraform in `cwd` with only the given CLI config file, a HOME of its
 * own, no checkpoint calls and no plugin cache.
 */
export async function runTerraform(
  bin: string,
  cwd: string,
  args: string[],
  cliConfig: string,
  env: Record<string, string> = {},
): Promise<TfRun> {
  const rc = join(cwd, ".terraformrc.test");
  await Deno.writeTextFile(rc, cliConfig);
  const out = await new Deno.Command(bin, {
    args: [...args, "-no-color"],
    cwd,
    clearEnv: true,
    env: {
      PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
      HOME: cwd,
      TF_CLI_CONFIG_FILE: rc,
      CHECKPOINT_DISABLE: "1",
      TF_IN_AUTOMATION: "1",
      ...env,
    },
    stdin: "null",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, output: dec.decode(out.stdout) + dec.decode(out.stderr) };
}

/** A root module requiring the given providers at exact versions. */
export function requiredProviders(providers: Array<{ source: string; version: string }>): string {
  const lines = providers.map((p) => {
    const name = p.source.split("/").at(-1);
    return `    ${name} = { source = "${p.source}", version = "${p.version}" }`;
  });
  return `terraform {\n  required_providers {\n${lines.join("\n")}\n  }\n}\n`;
}

/** The `h1:` hashes a lock file records for a provider address. */
export function lockedHashes(lock: string, address: string): string[] {
  const block = new RegExp(`provider "${address.replace(/\./g, "\\.")}" \\{([\\s\\S]*?)\\n\\}`)
    .exec(
      lock,
    );
  if (!block) return [];
  return [...block[1]!.matchAll(/"((?:h1|zh):[^"]+)"/g)].map((m) => m[1]!);
}
