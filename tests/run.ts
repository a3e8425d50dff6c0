/**
 * `deno task test`: starts the RGW test cluster (tests/_rgw_cluster.ts)
 * beside `deno test`, so it comes up while the test modules type-check and
 * runs once for all workers; the test modules wait for it through the file
 * named by {@link RGW_ENV}. Stops it by PID when the tests end and exits
 * with `deno test`'s status. Arguments replace the default `tests/`.
 * @module
 */
import { cannotStart, RGW_ENV, type RunningRgw, startRgw } from "./_rgw_cluster.ts";

const stateFile = await Deno.makeTempFile({ prefix: "repoxy-rgw-state-" });
const say = (line: string) => {
  // deno-lint-ignore no-console
  console.error(line);
};

const cluster = (async (): Promise<RunningRgw | undefined> => {
  const why = await cannotStart();
  let state: unknown = { unavailable: why };
  let running: RunningRgw | undefined;
  if (!why) {
    try {
      running = await startRgw();
      const { stop: _stop, startSeconds, ...endpoint } = running;
      state = { ready: endpoint };
      say(`RGW test cluster up at ${running.endpoint} in ${startSeconds.toFixed(1)} s`);
    } catch (e) {
      state = { unavailable: `the RGW cluster did not start: ${(e as Error).message}` };
    }
  }
  // Written whole in one rename: readers never see half of it.
  await Deno.writeTextFile(`${stateFile}.new`, JSON.stringify(state));
  await Deno.rename(`${stateFile}.new`, stateFile);
  return running;
})();

const args = Deno.args.length ? Deno.args : ["tests/"];
const child = new Deno.Command(Deno.execPath(), {
  args: ["test", "-P=test", "--frozen", "--parallel", ...args],
  env: { [RGW_ENV]: stateFile },
  stdin: "inherit",
}).spawn();
const status = await child.status;
const running = await cluster;
await running?.stop();
await Deno.remove(stateFile).catch(() => {});
Deno.exit(status.code);
