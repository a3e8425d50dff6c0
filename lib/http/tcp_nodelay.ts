/**
 * Turns Nagle's algorithm off for the connections `Deno.serve` accepts over
 * TLS, on Linux.
 *
 * Why: Deno 2.9's TLS server never sets TCP_NODELAY on accepted sockets
 * (strace shows no setsockopt), yet writes a response's head and body as
 * separate TLS records, each HTTP/2 frame as its own write, and the session
 * ticket right before the first response. The kernel then holds each later
 * small write until the client ACKs the earlier one, and clients delay that
 * ACK by up to 40 ms: every metadata answer took ~44 ms on loopback (about 700
 * requests/s on 32 connections) and downloads paid it at start and end.
 * Deno sets TCP_NODELAY on plain-TCP connections, and nginx on TLS ones, but
 * offers no option for this. Linux copies TCP_NODELAY from a listening socket
 * to the sockets it accepts, so one setsockopt on the listener fixes them all.
 *
 * The listener is found by asking each low file descriptor, through libc,
 * whether it is a listening socket on our port (reading /proc/self/fd would
 * need every Deno permission). This needs the `ffi` permission, which the
 * `serve` permission set grants; without it the server works as before, only
 * with the stalls, and says so once at start-up.
 * @module
 */

const SOL_SOCKET = 1;
const SO_ACCEPTCONN = 30;
const IPPROTO_TCP = 6;
const TCP_NODELAY = 1;
const AF_INET = 2;
const AF_INET6 = 10;
/** File descriptors probed; a server has only a few open when it starts. */
const MAX_FD = 4096;

/** What {@link setListenerNoDelay} did. */
export type NoDelayResult = { ok: true; fds: number[] } | { ok: false; reason: string };

const SYMBOLS = {
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  getpeername: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  shutdown: { parameters: ["i32", "i32"], result: "i32" },
  getrlimit: { parameters: ["i32", "buffer"], result: "i32" },
} as const;

/** libc socket calls (Linux, glibc). The caller closes it. */
export type SocketLib = Deno.DynamicLibrary<typeof SYMBOLS>;

/** Opens libc for the socket calls above. */
export function openSocketLib(): SocketLib {
  return Deno.dlopen("libc.so.6", SYMBOLS);
}

/** An int socket option, or undefined when `fd` is not a socket (or has no such option). */
export function intOption(lib: SocketLib, fd: number, level: number, name: number) {
  const value = new Int32Array(1);
  const len = new Uint32Array([4]);
  const rc = lib.symbols.getsockopt(
    fd,
    level,
    name,
    new Uint8Array(value.buffer),
    new Uint8Array(len.buffer),
  );
  return rc === 0 ? value[0]! : undefined;
}

/** The TCP port of a socket's local (or peer) address, or undefined. */
export function socketPort(lib: SocketLib, fd: number, peer = false): number | undefined {
  const addr = new Uint8Array(128);
  const len = new Uint32Array([addr.length]);
  const call = peer ? lib.symbols.getpeername : lib.symbols.getsockname;
  if (call(fd, addr, new Uint8Array(len.buffer)) !== 0) return undefined;
  const family = addr[0]! | (addr[1]! << 8);
  if (family !== AF_INET && family !== AF_INET6) return undefined;
  return (addr[2]! << 8) | addr[3]!; // network byte order
}

/** Whether TCP_NODELAY is set on a socket (undefined when not a TCP socket). */
export function hasNoDelay(lib: SocketLib, fd: number): boolean | undefined {
  const v = intOption(lib, fd, IPPROTO_TCP, TCP_NODELAY);
  return v === undefined ? undefined : v !== 0;
}

/**
 * Sets TCP_NODELAY on this process's listening socket(s) for `port`, so every
 * connection accepted afterwards has it. Never throws: the result says why it
 * did nothing (not Linux, no `ffi` permission, no such socket).
 */
export async function setListenerNoDelay(port: number): Promise<NoDelayResult> {
  if (Deno.build.os !== "linux") return { ok: false, reason: "only done on Linux" };
  try {
    if ((await Deno.permissions.query({ name: "ffi" })).state !== "granted") {
      return { ok: false, reason: "the ffi permission is not granted" };
    }
    const lib = openSocketLib();
    try {
      const fds: number[] = [];
      const one = new Uint8Array(new Int32Array([1]).buffer);
      for (let fd = 3; fd < MAX_FD; fd++) {
        if (!intOption(lib, fd, SOL_SOCKET, SO_ACCEPTCONN)) continue;
        if (socketPort(lib, fd) !== port) continue;
        if (lib.symbols.setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, one, 4) === 0) fds.push(fd);
        // One listen call makes one socket: stop here. Probing the other
        // ~4,000 descriptors cost ~8 MiB of RSS that stayed for the life of
        // the process (each FFI call allocates, and the hot loop gets compiled).
        break;
      }
      return fds.length > 0
        ? { ok: true, fds }
        : { ok: false, reason: `no listening socket found for port ${port}` };
    } finally {
      lib.close();
    }
  } catch (e) {
    return { ok: false, reason: (e as Error).message };
  }
}

const SHUT_RDWR = 2;
const RLIMIT_NOFILE = 7;
/** Never scan more descriptors than this, whatever the limit says. */
const MAX_SCAN = 1 << 20;
/** Consecutive descriptors without a socket after which the scan stops, unless told otherwise. */
const MAX_GAP = 1024;

/** The soft RLIMIT_NOFILE: file descriptors are below it. */
function fdLimit(lib: SocketLib): number {
  const lim = new BigUint64Array(2);
  if (lib.symbols.getrlimit(RLIMIT_NOFILE, new Uint8Array(lim.buffer)) !== 0) return MAX_FD;
  return Math.min(Number(lim[0]), MAX_SCAN);
}

/**
 * Shuts down (both directions) this process's TCP sockets on local port
 * `port` whose peer port is in `peerPorts`; returns how many it found.
 *
 * Why: a TLS connection whose handshake never completes (a client that
 * connects and sends nothing) cannot be closed through Deno 2.9: `close()` on
 * the TlsConn, or aborting its server, leaves the socket open while the
 * handshake task waits for bytes. shutdown(2) makes that wait end, and Deno
 * then closes the descriptor. Needs the `ffi` permission: returns -1 without
 * it (the caller says so once), and -2 when libc could not be used now (at
 * the descriptor limit dlopen itself fails; the caller retries). Only ports are compared: two clients on
 * different hosts with the same source port would both be shut, which costs
 * the innocent one a retry (rare, and only while a stale handshake is cut).
 * `gap`: consecutive descriptors without a socket after which the scan stops;
 * connections that closed below a live one leave that many free, so a server
 * passes more than it may have open at once.
 */
export async function shutdownPeers(
  port: number,
  peerPorts: Set<number>,
  gap = MAX_GAP,
): Promise<number> {
  if (Deno.build.os !== "linux" || peerPorts.size === 0) return 0;
  try {
    if ((await Deno.permissions.query({ name: "ffi" })).state !== "granted") return -1;
    const lib = openSocketLib();
    try {
      let found = 0;
      const limit = fdLimit(lib);
      // Linux hands out the lowest free descriptor, so open ones are dense:
      // a run without a socket longer than the holes closed connections can
      // leave means we are past them all. This keeps the scan proportional
      // to what is open, not to a huge limit.
      let misses = 0;
      for (let fd = 3; fd < limit && found < peerPorts.size && misses < gap; fd++) {
        // One call for a free descriptor or another port's socket, the common cases.
        const local = socketPort(lib, fd);
        if (local === undefined) {
          misses++;
          continue;
        }
        misses = 0;
        if (local !== port) continue;
        const peer = socketPort(lib, fd, true);
        if (peer === undefined || !peerPorts.has(peer)) continue;
        if (lib.symbols.shutdown(fd, SHUT_RDWR) === 0) found++;
      }
      return found;
    } finally {
      lib.close();
    }
  } catch {
    return -2;
  }
}
