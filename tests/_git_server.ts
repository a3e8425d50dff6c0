/**
 * A git server for tests: bare repositories under one directory served over
 * smart HTTP on 127.0.0.1:0 by running `git http-backend` as a CGI per
 * request. Also builds small repositories (`makeRepo`) with tags to move.
 * @module
 */

/** Where `git http-backend` lives, or null (tests then skip). */
export async function findGitBackend(): Promise<string | null> {
  try {
    const out = await new Deno.Command("git", { args: ["--exec-path"], stdout: "piped" }).output();
    if (!out.success) return null;
    const path = `${new TextDecoder().decode(out.stdout).trim()}/git-http-backend`;
    await Deno.stat(path);
    return path;
  } catch {
    return null;
  }
}

/** A running git server. */
export interface GitServer extends AsyncDisposable {
  /** `http://127.0.0.1:{port}/` */
  url: string;
  /** Requests served, by path (tests count them). */
  requests: string[];
  /** Pack fetches asked for (protocol v2 `command=fetch` or v0 `want` lines), with their `deepen`. */
  fetches: Array<{ deepen: string | undefined }>;
  close(): Promise<void>;
}

/** Serves every bare repository under `root` (`{url}{name}.git`). */
export async function startGitServer(root: string): Promise<GitServer> {
  const backend = await findGitBackend();
  if (!backend) throw new Error("git http-backend not found");
  const requests: string[] = [];
  const fetches: GitServer["fetches"] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const u = new URL(req.url);
    requests.push(u.pathname);
    const child = new Deno.Command(backend, {
      clearEnv: true,
      env: {
        PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
        GIT_PROJECT_ROOT: root,
        GIT_HTTP_EXPORT_ALL: "1",
        REQUEST_METHOD: req.method,
        PATH_INFO: decodeURIComponent(u.pathname),
        QUERY_STRING: u.search.slice(1),
        CONTENT_TYPE: req.headers.get("content-type") ?? "",
        REMOTE_ADDR: "127.0.0.1",
        ...(req.headers.get("git-protocol")
          ? { GIT_PROTOCOL: req.headers.get("git-protocol")! }
          : {}),
        ...(req.headers.get("content-encoding")
          ? { HTTP_CONTENT_ENCODING: req.headers.get("content-encoding")! }
          : {}),
      },
      stdin: "piped",
      stdout: "piped",
      stderr: "null",
    }).spawn();
    const input = req.body ? new Uint8Array(await req.arrayBuffer()) : undefined;
    if (input && !req.headers.get("content-encoding")) {
      const text = new TextDecoder().decode(input);
      if (text.includes("command=fetch") || /^[0-9a-f]{4}want /m.test(text)) {
        fetches.push({ deepen: pktLines(text).find((l) => l.startsWith("deepen "))?.slice(7) });
      }
    }
    const body = input
      ? (async () => {
        const w = child.stdin.getWriter();
        await w.write(input).catch(() => {});
        await w.close().catch(() => {});
      })()
      : child.stdin.close();
    const out = new Uint8Array(await new Response(child.stdout).arrayBuffer());
    await body;
    await child.status;
    // CGI: headers up to the blank line, then the body.
    let split = -1;
    for (let i = 0; i + 3 < out.length; i++) {
      if (out[i] === 13 && out[i + 1] === 10 && out[i + 2] === 13 && out[i + 3] === 10) {
        split = i;
        break;
      }
    }
    let sep = 4;
    if (split < 0) {
      split = out.indexOf(10);
      while (split >= 0 && out[split + 1] !== 10) split = out.indexOf(10, split + 1);
      sep = 2;
    }
    if (split < 0) return new Response("bad cgi", { status: 500 });
    const head = new TextDecoder().decode(out.subarray(0, split));
    const headers = new Headers();
    let status = 200;
    for (const line of head.split(/\r?\n/)) {
      const i = line.indexOf(":");
      if (i < 0) continue;
      const k = line.slice(0, i).trim();
      const v = line.slice(i + 1).trim();
      if (k.toLowerCase() === "status") status = parseInt(v, 10);
      else headers.append(k, v);
    }
    return new Response(out.subarray(split + sep), { status, headers });
  });
  const addr = server.addr as Deno.NetAddr;
  const close = async () => {
    await server.shutdown();
  };
  return {
    url: `http://127.0.0.1:${addr.port}/`,
    requests,
    fetches,
    close,
    [Symbol.asyncDispose]: close,
  };
}

/** Runs git in `cwd`, failing loudly. */
export async function git(cwd: string, ...args: string[]): Promise<string> {
  const out = await new Deno.Command("git", {
    args: ["-c", "user.name=t", "-c", "user.email=t@example.com", ...args],
    cwd,
    stdout: "piped",
    stderr: "piped",
    env: {
      GIT_CONFIG_NOSYSTEM: "1",
      GIT_CONFIG_GLOBAL: "/dev/null",
      GIT_AUTHOR_DATE: "2024-01-01T00:00:00Z",
      GIT_COMMITTER_DATE: "2024-01-01T00:00:00Z",
    },
  }).output();
  if (!out.success) {
    throw new Error(`git ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
  return new TextDecoder().decode(out.stdout).trim();
}

/**
 * Creates `{root}/{name}.git` (bare) from `files` (path → content), commits
 * and tags `tag`. Returns the commit id.
 */
export async function makeRepo(
  root: string,
  name: string,
  files: Record<string, string | Uint8Array>,
  tag: string,
): Promise<string> {
  const work = await Deno.makeTempDir({ prefix: "mod-gitwork-" });
  try {
    await git(work, "init", "-q", "-b", "main");
    await writeFiles(work, files);
    await git(work, "add", "-A");
    await git(work, "commit", "-q", "-m", "first");
    await git(work, "tag", tag);
    await git(root, "clone", "-q", "--bare", work, `${name}.git`);
    return await git(work, "rev-parse", "HEAD");
  } finally {
    await Deno.remove(work, { recursive: true });
  }
}

/** Commits `files` on top of `{root}/{name}.git` and moves `tag` there. Returns the commit id. */
export async function moveTag(
  root: string,
  name: string,
  files: Record<string, string | Uint8Array>,
  tag: string,
): Promise<string> {
  const work = await Deno.makeTempDir({ prefix: "mod-gitwork-" });
  try {
    await git(work, "clone", "-q", `${root}/${name}.git`, ".");
    await writeFiles(work, files);
    await git(work, "add", "-A");
    await git(work, "commit", "-q", "-m", "moved");
    await git(work, "tag", "-f", tag);
    await git(work, "push", "-q", "-f", "origin", `refs/tags/${tag}`);
    return await git(work, "rev-parse", "HEAD");
  } finally {
    await Deno.remove(work, { recursive: true });
  }
}

async function writeFiles(dir: string, files: Record<string, string | Uint8Array>) {
  for (const [path, content] of Object.entries(files)) {
    const full = `${dir}/${path}`;
    await Deno.mkdir(full.slice(0, full.lastIndexOf("/")), { recursive: true });
    if (typeof content === "string") await Deno.writeTextFile(full, content);
    else await Deno.writeFile(full, content);
  }
}

/** The pkt-lines of a request body (flush and delimiter packets dropped, newlines trimmed). */
function pktLines(text: string): string[] {
  const out: string[] = [];
  let i = 0;
  while (i + 4 <= text.length) {
    const len = parseInt(text.slice(i, i + 4), 16);
    if (!(len >= 0)) break;
    if (len < 4) {
      i += 4;
      continue;
    }
    out.push(text.slice(i + 4, i + len).replace(/\n$/, ""));
    i += len;
  }
  return out;
}

/**
 * `{dir}/git/{name}.git` made from `files` and tagged `tag` ({@link makeRepo}),
 * served ({@link startGitServer}): the set-up of most module tests.
 */
export async function serveRepo(
  dir: string,
  name: string,
  files: Record<string, string | Uint8Array>,
  tag: string,
): Promise<GitServer & { root: string; commit: string }> {
  const root = `${dir}/git`;
  await Deno.mkdir(root);
  const commit = await makeRepo(root, name, files, tag);
  return Object.assign(await startGitServer(root), { root, commit });
}
