/**
 * A logger that adds fixed fields to every line, such as the replica id that
 * labels what each replica of a fleet logs (`storage.replicaId`), so lines
 * from several replicas gathered in one place still say whose they are.
 * @module
 */
import type { LogFields, Logger, LogLevel } from "./log.ts";

/**
 * `log` with `replica` added to every line; `log` itself when there is no
 * replica id (the local disk alone: nothing changes).
 */
export function withFields(log: Logger, replica: string | undefined): Logger {
  if (replica === undefined) return log;
  const add = (fields?: LogFields): LogFields => ({ replica, ...fields });
  return {
    log: (level: LogLevel, msg: string, fields?: LogFields) => log.log(level, msg, add(fields)),
    info: (msg, fields) => log.info(msg, add(fields)),
    warn: (msg, fields) => log.warn(msg, add(fields)),
    error: (msg, fields) => log.error(msg, add(fields)),
  };
}
