/**
 * The clocks that give up on a slow upstream body: an idle timer (nothing
 * arrived for a while) and a minimum average rate over consecutive windows
 * (a 1 byte/s trickle resets an idle timer forever, but not this), and the
 * bounds of one archive transfer.
 * @module
 */
import { formatSize } from "../base/size.ts";

/** Rate bound of a transfer: bytes/s averaged over each window (0: none). */
export interface RateBound {
  minTransferRate: number;
  transferRateWindowMs: number;
}

/** Bounds of one archive transfer (from `config.limits`). */
export interface TransferLimits extends RateBound {
  /** Largest archive accepted. */
  archiveBytes: number;
}

/** Default transfer bounds (config.limits has the operator's). */
export const DEFAULT_TRANSFER_LIMITS: Readonly<TransferLimits> = {
  archiveBytes: 2 * 2 ** 30,
  minTransferRate: 4 * 2 ** 10,
  transferRateWindowMs: 30_000,
};

/** Calls `stall(why)` once the body idles for `idleMs` or falls under the rate bound. */
export class TransferWatchdog {
  #idle: ReturnType<typeof setTimeout> | undefined;
  #rate: ReturnType<typeof setInterval> | undefined;
  #windowBytes = 0;

  /** Starts the idle timer; the rate window starts with {@link startWindow}. */
  constructor(
    readonly idleMs: number,
    readonly bound: RateBound,
    readonly stall: (why: string) => void,
  ) {
    this.#armIdle();
  }

  #armIdle(): void {
    clearTimeout(this.#idle);
    this.#idle = setTimeout(() => this.stall(`stalled for ${this.idleMs} ms`), this.idleMs);
  }

  /** Starts (or restarts) measuring the rate from now. */
  startWindow(): void {
    clearInterval(this.#rate);
    this.#windowBytes = 0;
    const { minTransferRate: rate, transferRateWindowMs: windowMs } = this.bound;
    if (rate <= 0) return;
    const floor = rate * windowMs / 1000;
    this.#rate = setInterval(() => {
      if (this.#windowBytes < floor) {
        this.stall(
          `sent ${this.#windowBytes} bytes in ${windowMs} ms, under the minimum of ${
            formatSize(rate)
          }/s`,
        );
      }
      this.#windowBytes = 0;
    }, windowMs);
  }

  /** `n` bytes arrived. */
  tick(n: number): void {
    this.#armIdle();
    this.#windowBytes += n;
  }

  /** Stops both clocks while we, not the upstream, are the slow side (waiting for clients). */
  pause(): void {
    clearTimeout(this.#idle);
    clearInterval(this.#rate);
  }

  /** Restarts both clocks after {@link pause}. */
  resume(): void {
    this.#armIdle();
    this.startWindow();
  }

  /** Stops measuring the rate (the body ended); the idle timer keeps running. */
  stopWindow(): void {
    clearInterval(this.#rate);
  }

  /** Stops both clocks. */
  stop(): void {
    clearTimeout(this.#idle);
    clearInterval(this.#rate);
  }
}
