/**
 * A counting semaphore for upstream work one client request can cause many
 * of (download documents of many platforms): the waits end when the
 * caller's signal aborts, so work nobody waits for is never started.
 * @module
 */
import { UpstreamTimeoutError } from "../http/errors.ts";

/** Why a wait ended early: the caller's signal aborted. */
export function givenUp(): UpstreamTimeoutError {
  return new UpstreamTimeoutError("the upstream did not answer in time; try again shortly");
}

/** A counting semaphore whose waits end when a signal aborts. */
export class Slots {
  #free: number;
  readonly #queue: Array<() => void> = [];

  /** @param n slots free at first */
  constructor(n: number) {
    this.#free = n;
  }

  /** Takes a slot, waiting for one; rejects with a 504 when `signal` aborts first. */
  async take(signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) throw givenUp();
    if (this.#free > 0) {
      this.#free--;
      return;
    }
    await new Promise<void>((resolve, reject) => {
      const go = () => {
        signal?.removeEventListener("abort", stop);
        resolve();
      };
      const stop = () => {
        const i = this.#queue.indexOf(go);
        if (i >= 0) this.#queue.splice(i, 1);
        reject(givenUp());
      };
      this.#queue.push(go);
      signal?.addEventListener("abort", stop, { once: true });
    });
  }

  /** Gives a slot back (to the longest waiter, if any). */
  give(): void {
    const next = this.#queue.shift();
    if (next) next();
    else this.#free++;
  }
}
