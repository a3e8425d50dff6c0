/**
 * Runs Repoxy as a child process (`deno run main.ts`, a bundle, or a
 * compiled binary), finds the URL it reports, and stops it with a signal.
 * @module
 */

/** A started Repoxy process. */
export interface RepoxyProcess extends AsyncDisposable {
  /** The base URL from the "repoxy started" log line. */
  url: string;
  /** The child's process id (to read its /proc status, e.g. peak RSS). */
  pid: number;
  /** Lines written so far, by stream. */
  stdout: string[];
  stderr: string[];
  /** Sends `signal` and waits for the exit; all output has been read when this resolves. */
  stop(signal?: Deno.Signal): Promise<Deno.CommandStatus>;
}

async function pumpLines(
  stream: ReadableStream<Uint8Array>,
  into: string[],
  onLine: (line: string) => void,
): Promise<void> {
  let rest = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    rest += chunk;
    let i: number;
    while ((i = rest.indexOf("\n")) >= 0) {
      const line = rest.slice(0, i);
      rest = rest.slice(i + 1);
      into.push(line);
      onLine(line);
    }
  }
  if (rest !== "") {
    into.push(rest);
    onLine(rest);
  }
}

/** Reads the server URL from a "repoxy started" line in either log format. */
export function startedUrl(line: string): string | undefined {
  if (line.startsWith("{")) {
    try {
      const rec = JSON.parse(line);
      if (rec.msg === "repoxy started" && typeof rec.url === "string") return rec.url;
    } catch { /* not JSON */ }
    return undefined;
  }
  const m = / INFO repoxy started .*\burl=(\S+)/.exec(line);
  return m?.[1];
}

/**
 * Spawns `cmd args`, waits until it logs that it started, and returns it.
 * Rejects (after killing the child) when it exits or stays silent too long.
 */
export async function spawnRepoxy(
  cmd: string,
  args: string[],
  opts: { cwd?: string; env?: Record<string, string>; timeoutMs?: number } = {},
): Promise<RepoxyProcess> {
  const child = new Deno.Command(cmd, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    ...(opts.cwd ? { cwd: opts.cwd } : {}),
    ...(opts.env ? { env: opts.env } : {}),
  }).spawn();
  const stdout: string[] = [];
  const stderr: string[] = [];
  let resolveUrl!: (u: string) => void;
  const urlSeen = new Promise<string>((r) => (resolveUrl = r));
  const onLine = (l: string) => {
    const u = startedUrl(l);
    if (u) resolveUrl(u);
  };
  const pumps = Promise.all([
    pumpLines(child.stdout, stdout, onLine),
    pumpLines(child.stderr, stderr, onLine),
  ]);
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });
  let timer: ReturnType<typeof setTimeout> | undefined;
  const outcome = await Promise.race([
    urlSeen,
    status.then(() => "exited" as const),
    new Promise<"timeout">((
      r,
    ) => (timer = setTimeout(() => r("timeout"), opts.timeoutMs ?? 30_000))),
  ]);
  clearTimeout(timer);
  const stop = async (signal: Deno.Signal = "SIGTERM") => {
    if (!exited) {
      try {
        child.kill(signal);
      } catch { /* already gone */ }
    }
    const s = await status;
    await pumps;
    return s;
  };
  if (outcome === "exited" || outcome === "timeout") {
    const s = await stop("SIGKILL");
    throw new Error(
      `repoxy did not start (${outcome}, code ${s.code}):\n${stderr.join("\n")}\n${
        stdout.join("\n")
      }`,
    );
  }
  return {
    url: outcome,
    pid: child.pid,
    stdout,
    stderr,
    stop,
    async [Symbol.asyncDispose]() {
      await stop("SIGKILL");
    },
  };
}
