// Trying again: what the pages do while the server restarts, a stream is not
// live, or a connection dropped. Delays grow so that a server coming back is
// not met by every page at once, and are capped so that nobody waits long
// once it is back.

/** Delays that double from `first` to `max` (ms), each ±20 % at random. */
export class Backoff {
  constructor(first = 1000, max = 10000) {
    this.first = first;
    this.max = max;
    this.reset();
  }

  reset() {
    this.delay = this.first;
  }

  /** The next delay, at least `atLeast` ms (a server's Retry-After) but never over the cap. */
  next(atLeast = 0) {
    const delay = this.delay * (0.8 + Math.random() * 0.4);
    this.delay = Math.min(this.delay * 2, this.max);
    return Math.min(Math.max(delay, atLeast), this.max);
  }
}

/** A sleep that `wake()` ends early (the stream is back: try now). */
export class Alarm {
  constructor() {
    this.ring = null;
    // A wake() between two sleeps ends the next one at once.
    this.rung = false;
  }

  sleep(ms) {
    if (this.rung) {
      this.rung = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.ring = null;
        resolve();
      }, ms);
      this.ring = () => {
        clearTimeout(timer);
        this.ring = null;
        resolve();
      };
    });
  }

  wake() {
    if (this.ring) this.ring();
    else this.rung = true;
  }
}
