/**
 * Fetching one commit of a git repository with the `git` CLI, shallowly,
 * under the same egress policy as every other upstream fetch.
 *
 * Why the CLI (measured, see README): a depth-1 fetch of a tag from a
 * 95 MB-history repository with a 30 MB tree took 1.6 s and 35 MB peak RSS
 * with git 2.39, against 4.0 s and 297 MB with isomorphic-git 1.27 (which
 * holds the whole pack in memory). The price is a runtime dependency, found
 * at start-up ({@link probeGit}) and named on /readyz and the status page.
 *
 * Hardening, since the URL comes from an upstream document:
 * - the host is vetted by the {@link EgressPolicy} first; a plain-http
 *   target is pinned to the vetted address with `http.curloptResolve`, a
 *   proxied one goes through the same proxy; redirects are not followed
 *   (a redirect would reach a host nobody vetted);
 * - `GIT_ALLOW_PROTOCOL=https:http` (nor file, ssh, ext), no system or global
 *   config, no credential helper, no terminal prompt, no hooks, no
 *   submodules, no LFS smudge, no fsmonitor;
 * - the whole run is bounded in time (killed at the deadline, and at a
 *   speed floor) and in size (the incoming pack is watched and the run
 *   killed past the bound).
 * @module
 */
import type { EgressPolicy, EgressRoute } from "../upstream/egress.ts";

/** The git CLI could not fetch (or is missing). */
export class GitFetchError extends Error {
  override name = "GitFetchError";
}

/** What {@link probeGit} found. */
export interface GitProbe {
  available: boolean;
  /** `git version 2.39.5`, or why not. */
  detail: string;
}

/** Runs `git --version` once: whether git-sourced modules can be cached. */
export async function probeGit(bin = "git"): Promise<GitProbe> {
  try {
    const out = await new Deno.Command(bin, {
      args: ["--version"],
      stdout: "piped",
      stderr: "null",
      clearEnv: true,
      env: { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin" },
    }).output();
    const text = new TextDecoder().decode(out.stdout).trim();
    return out.success
      ? { available: true, detail: text }
      : { available: false, detail: "git --version failed" };
  } catch (e) {
    return { available: false, detail: `git not found (${(e as Error).name})` };
  }
}

/** Options of {@link fetchGitCommit}. */
export interface GitFetchOptions {
  egress: EgressPolicy;
  /** Largest transfer (incoming pack) and checkout, in bytes. */
  maxBytes: number;
  /** Most files a checkout may have (default 100 000). */
  maxFiles?: number;
  /** Deadline of the whole fetch. */
  timeoutMs: number;
  signal?: AbortSignal;
  bin?: string;
}

/** The environment every git run gets: nothing from the process, nothing from config files. */
function gitEnv(home: string): Record<string, string> {
  return {
    PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
    HOME: home,
    GIT_CONFIG_NOSYSTEM: "1",
    GIT_CONFIG_GLOBAL: "/dev/null",
    GIT_ALLOW_PROTOCOL: "https:http",
    GIT_TERMINAL_PROMPT: "0",
    GIT_ASKPASS: "/bin/false",
    SSH_ASKPASS: "/bin/false",
    GIT_LFS_SKIP_SMUDGE: "1",
    GIT_NO_REPLACE_OBJECTS: "1",
    LC_ALL: "C",
  };
}

/** `-c` settings every git run gets. */
function gitConfig(url: URL, route: { via: string; address?: string; proxy?: string }): string[] {
  const c = [
    "credential.helper=",
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "core.symlinks=true",
    "protocol.allow=never",
    "protocol.https.allow=always",
    "protocol.http.allow=always",
    "http.followRedirects=false",
    "http.lowSpeedLimit=1024",
    "http.lowSpeedTime=30",
    "submodule.recurse=false",
    "fetch.recurseSubmodules=false",
    "filter.lfs.smudge=",
    "filter.lfs.process=",
    "filter.lfs.required=false",
    "advice.detachedHead=false",
    // Every fetch kept as a pack in objects/pack, the one place the transfer
    // bound watches: below the default limit of 100 objects git would explode
    // the pack into loose objects, unwatched and unbounded.
    "fetch.unpackLimit=1",
    "transfer.unpackLimit=1",
    "init.defaultBranch=main",
    `http.proxy=${route.via === "proxy" ? route.proxy ?? "" : ""}`,
  ];
  if (route.via === "pinned" && route.address) {
    const port = url.port || (url.protocol === "https:" ? "443" : "80");
    const addr = route.address.includes(":") ? `[${route.address}]` : route.address;
    c.push(`http.curloptResolve=${url.hostname}:${port}:${addr}`);
  }
  return c.flatMap((s) => ["-c", s]);
}

/**
 * How git may connect to `url`: the egress policy's verdict, and for https
 * (which the policy lets through by name, the certificate guarding against
 * rebinding) the address it vetted, so curl makes no second lookup either.
 */
async function gitRoute(egress: EgressPolicy, url: URL): Promise<EgressRoute> {
  const route = await egress.route(url);
  if (route.via !== "direct" || url.protocol !== "https:") return route;
  const twin = new URL(url.href);
  twin.protocol = "http:";
  if (!twin.port) twin.port = "443";
  try {
    const pinned = await egress.route(twin);
    if (pinned.via === "pinned" && pinned.address) return pinned;
  } catch { /* vetted by name above (an exempt origin): connect by name */ }
  return route;
}

/** Total size of the files directly in `dir` (the incoming pack), 0 when absent. */
async function dirBytes(dir: string): Promise<number> {
  let n = 0;
  try {
    for await (const e of Deno.readDir(dir)) {
      if (e.isFile) n += (await Deno.stat(`${dir}/${e.name}`).catch(() => ({ size: 0 }))).size;
    }
  } catch { /* not there yet */ }
  return n;
}

/** Most of git's stdout read (an `ls-tree` of 100 000 files is ~10 MB). */
const MAX_STDOUT = 32 * 2 ** 20;
/** Most of git's stderr kept (only its last lines are reported). */
const MAX_STDERR = 64 * 1024;

/** Reads a stream as text up to `max` bytes; the rest is drained and dropped (`over` told once). */
async function boundedText(
  stream: ReadableStream<Uint8Array>,
  max: number,
  over?: () => void,
): Promise<string> {
  const chunks: Uint8Array[] = [];
  let n = 0;
  for await (const c of stream) {
    if (n + c.length > max) {
      if (n < max) chunks.push(c.subarray(0, max - n));
      if (n <= max) over?.();
      n = max + 1;
      continue;
    }
    chunks.push(c);
    n += c.length;
  }
  const all = new Uint8Array(chunks.reduce((a, c) => a + c.length, 0));
  let off = 0;
  for (const c of chunks) {
    all.set(c, off);
    off += c.length;
  }
  return new TextDecoder().decode(all);
}

async function run(
  args: string[],
  cwd: string,
  env: Record<string, string>,
  signal: AbortSignal,
  watch?: { dir: string; maxBytes: number },
  bin = "git",
): Promise<string> {
  const child = new Deno.Command(bin, {
    args,
    cwd,
    env,
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    // Its own process group: `git fetch` runs git-remote-http and index-pack,
    // which inherit the pipes; killing git alone left them running (and the
    // pipes open) until curl's speed floor gave up, 30 s past the deadline.
    detached: true,
  }).spawn();
  let killedWhy: string | undefined;
  const kill = (why: string) => {
    killedWhy ??= why;
    try {
      Deno.kill(-child.pid, "SIGKILL");
    } catch {
      try {
        child.kill("SIGKILL");
      } catch { /* already gone */ }
    }
  };
  const onAbort = () => kill("timed out or cancelled");
  signal.addEventListener("abort", onAbort, { once: true });
  if (signal.aborted) onAbort();
  const timer = watch
    ? setInterval(async () => {
      if (await dirBytes(watch.dir) > watch.maxBytes) kill(`transfer over ${watch.maxBytes} bytes`);
    }, 200)
    : undefined;
  try {
    // Bounded: a hostile server's sideband messages end up on stderr.
    const [out, err] = await Promise.all([
      boundedText(child.stdout, MAX_STDOUT, () => kill("output over its bound")),
      boundedText(child.stderr, MAX_STDERR),
    ]);
    const status = await child.status;
    if (killedWhy) {
      const sub = args.find((a, i) => a !== "-c" && args[i - 1] !== "-c") ?? "";
      throw new GitFetchError(`git ${sub}: ${killedWhy}`);
    }
    if (!status.success) {
      throw new GitFetchError(
        `git failed: ${err.trim().split("\n").slice(-2).join(" ").slice(0, 300)}`,
      );
    }
    return out.trim();
  } finally {
    signal.removeEventListener("abort", onAbort);
    if (timer !== undefined) clearInterval(timer);
  }
}

/**
 * Fetches `ref` (a tag, branch or commit; undefined: HEAD) of `url` at
 * depth 1 into the empty directory `dir`, checks it out without `.git`
 * mattering to the caller (it is left there; packers skip it), and returns
 * the commit id.
 */
export async function fetchGitCommit(
  url: URL,
  ref: string | undefined,
  dir: string,
  opts: GitFetchOptions,
): Promise<string> {
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    throw new GitFetchError(`git over ${url.protocol} is not fetched`);
  }
  // Vetted before git sees it; throws EgressRefusedError for internal targets.
  const route = await gitRoute(opts.egress, url);
  const home = `${dir}/.git-home`;
  await Deno.mkdir(home, { recursive: true });
  const env = gitEnv(home);
  const cfg = gitConfig(url, route);
  const signals = [AbortSignal.timeout(opts.timeoutMs)];
  if (opts.signal) signals.push(opts.signal);
  const signal = AbortSignal.any(signals);
  const work = `${dir}/tree`;
  await Deno.mkdir(work);
  await run([...cfg, "init", "-q", "."], work, env, signal, undefined, opts.bin);
  // A full ref name is asked for as given; a short one as a tag first, as go-getter's
  // `git clone --branch` resolves it (tags and branches), then a commit id.
  const wanted = ref === undefined ? "HEAD" : ref;
  const candidates = wanted.startsWith("refs/") || wanted === "HEAD"
    ? [wanted]
    : /^[0-9a-f]{40}$/.test(wanted)
    ? [wanted]
    : [`refs/tags/${wanted}`, `refs/heads/${wanted}`];
  let lastError: unknown;
  for (const c of candidates) {
    try {
      await run(
        [
          ...cfg,
          "fetch",
          "-q",
          "--no-tags",
          "--no-recurse-submodules",
          "--depth=1",
          "--",
          url.href,
          c,
        ],
        work,
        env,
        signal,
        { dir: `${work}/.git/objects/pack`, maxBytes: opts.maxBytes },
        opts.bin,
      );
      lastError = undefined;
      break;
    } catch (e) {
      lastError = e;
      if (signal.aborted || (e as Error).message.includes("transfer over")) break;
    }
  }
  if (lastError) throw lastError;
  // The watch polls: a fast transfer may finish between two looks.
  if (await dirBytes(`${work}/.git/objects/pack`) > opts.maxBytes) {
    throw new GitFetchError(`git fetch: transfer over ${opts.maxBytes} bytes`);
  }
  const commit = await run(
    [...cfg, "rev-parse", "--verify", "FETCH_HEAD^{commit}"],
    work,
    env,
    signal,
    undefined,
    opts.bin,
  );
  // A small pack can hold a huge tree (repeated or highly compressible
  // blobs): the tree's sizes are summed before anything is written out.
  const listing = await run(
    [...cfg, "ls-tree", "-r", "-l", "-z", commit],
    work,
    env,
    signal,
    undefined,
    opts.bin,
  );
  let files = 0;
  let bytes = 0;
  for (const line of listing.split("\0")) {
    const size = Number(/^\d+ blob [0-9a-f]+\s+(\d+)\t/.exec(line)?.[1] ?? "0");
    if (line) files++;
    bytes += size;
  }
  if (bytes > opts.maxBytes || files > (opts.maxFiles ?? 100_000)) {
    throw new GitFetchError(
      `commit ${commit} has ${files} files of ${bytes} bytes, over the bound (limits.archiveSize)`,
    );
  }
  await run(
    [...cfg, "-c", "core.sparseCheckout=false", "checkout", "-q", "--detach", commit],
    work,
    env,
    signal,
    undefined,
    opts.bin,
  );
  return commit;
}

/**
 * The commit a ref names upstream now (`git ls-remote`), or undefined when
 * it names none; used to notice a moved tag, never to change what is served.
 */
export async function remoteCommit(
  url: URL,
  ref: string | undefined,
  opts: GitFetchOptions,
): Promise<string | undefined> {
  // A commit id cannot move: nothing to ask, nor a directory to make.
  if (ref && /^[0-9a-f]{40}$/.test(ref)) return ref;
  const route = await gitRoute(opts.egress, url);
  const home = await Deno.makeTempDir({ prefix: "repoxy-git-" });
  try {
    const signals = [AbortSignal.timeout(opts.timeoutMs)];
    if (opts.signal) signals.push(opts.signal);
    const names = ref === undefined ? ["HEAD"] : [`refs/tags/${ref}`, `refs/heads/${ref}`];
    const out = await run(
      [...gitConfig(url, route), "ls-remote", "--", url.href, ...names],
      home,
      gitEnv(home),
      AbortSignal.any(signals),
      undefined,
      opts.bin,
    );
    const lines = out.split("\n").map((l) => l.split("\t")) as Array<[string, string]>;
    // An annotated tag's peeled line (`^{}`) names the commit.
    for (const n of names) {
      const peeled = lines.find((l) => l[1] === `${n}^{}`);
      const plain = lines.find((l) => l[1] === n);
      if (peeled || plain) return (peeled ?? plain)![0];
    }
    return undefined;
  } finally {
    await Deno.remove(home, { recursive: true }).catch(() => {});
  }
}
