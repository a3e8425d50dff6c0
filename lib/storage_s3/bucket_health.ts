/**
 * Whether the bucket answers. Any failed bucket request marks it down: the
 * tier then serves from the local disk alone and skips the bucket for
 * {@link RETRY_MS} (no request waits on a dead bucket meanwhile); the next
 * request after that tries again, and one success marks it up. Each
 * transition is logged once. `/-/readyz` asks {@link BucketHealth.check},
 * which pings the bucket at most once a second.
 * @module
 */
import type { Logger } from "../base/log.ts";

/** After a failure, the bucket is skipped this long before it is tried again. */
export const RETRY_MS = 5_000;
/** A ping result is reused this long by readiness checks. */
const CHECK_REUSE_MS = 1_000;

/** The bucket's reachability as one replica sees it. */
export class BucketHealth {
  #ok = true;
  #reason: string | undefined;
  #retryAt = 0;
  #checkedAt = -Infinity;
  #checking: Promise<void> | undefined;
  #since: number;
  #lastError: { message: string; at: number } | undefined;
  #errors = 0;

  constructor(
    readonly where: string,
    readonly log: Logger,
    readonly ping: () => Promise<void>,
    readonly now: () => number = Date.now,
    readonly retryMs = RETRY_MS,
  ) {
    this.#since = now();
  }

  /** For the status page and metrics: state, since when, the last error (kept after recovery). */
  snapshot(): {
    ok: boolean;
    since: number;
    errors: number;
    lastError?: string;
    lastErrorAt?: number;
  } {
    return {
      ok: this.#ok,
      since: this.#since,
      errors: this.#errors,
      ...(this.#lastError
        ? { lastError: this.#lastError.message, lastErrorAt: this.#lastError.at }
        : {}),
    };
  }

  /** True while the bucket is believed reachable. */
  get ok(): boolean {
    return this.#ok;
  }

  /** Why the bucket is down (undefined while it is up). */
  get reason(): string | undefined {
    return this.#reason;
  }

  /** Whether a request should try the bucket now (up, or the retry time has come). */
  get usable(): boolean {
    return this.#ok || this.now() >= this.#retryAt;
  }

  /** Records a failed bucket request. */
  fail(e: Error): void {
    this.#retryAt = this.now() + this.retryMs;
    this.#reason = e.message;
    this.#errors++;
    this.#lastError = { message: e.message, at: this.now() };
    if (!this.#ok) return;
    this.#ok = false;
    this.#since = this.now();
    this.log.warn("storage bucket unreachable; serving from the local tier", {
      bucket: this.where,
      error: e.message,
    });
  }

  /** Records a bucket request that worked. */
  succeed(): void {
    if (this.#ok) return;
    this.#ok = true;
    this.#since = this.now();
    this.#reason = undefined;
    this.log.info("storage bucket reachable again", { bucket: this.where });
  }

  /** Pings the bucket unless a result is less than a second old; then says how it is. */
  async check(): Promise<{ ok: boolean; reason?: string }> {
    if (this.now() - this.#checkedAt >= CHECK_REUSE_MS) {
      this.#checking ??= this.ping().then(
        () => this.succeed(),
        (e) => this.fail(e as Error),
      ).finally(() => {
        this.#checkedAt = this.now();
        this.#checking = undefined;
      });
      await this.#checking;
    }
    return this.#ok ? { ok: true } : { ok: false, reason: this.#reason ?? "unreachable" };
  }
}
