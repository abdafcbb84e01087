// The globals a workflow sees: timers and `fetch` through the host, and
// `performance.now()` from the journaled wall clock, so that a replay sees
// the same values. `Date.now()` and `crypto.getRandomValues` are journaled
// or seeded by the host already.

import { durable, op } from './ops.js';
import { fetch, Headers, Response } from './fetch.js';

let installed = false;
let nextTimer = 0;
const timers = new Map();

function setTimer(fn, ms, args, repeat) {
  if (typeof fn !== 'function') throw new TypeError('setTimeout: the callback must be a function');
  const id = ++nextTimer;
  const delay = Math.max(0, Math.floor(Number(ms) || 0));
  timers.set(id, true);
  const arm = () =>
    op(durable.delay(BigInt(delay))).then(() => {
      if (!timers.has(id)) return;
      if (!repeat) timers.delete(id);
      fn(...args);
      if (repeat && timers.has(id)) arm();
    });
  arm();
  return id;
}

export function installGlobals() {
  if (installed) return;
  installed = true;
  globalThis.setTimeout = (fn, ms, ...args) => setTimer(fn, ms, args, false);
  globalThis.setInterval = (fn, ms, ...args) => setTimer(fn, ms, args, true);
  globalThis.clearTimeout = (id) => void timers.delete(id);
  globalThis.clearInterval = globalThis.clearTimeout;
  globalThis.fetch = fetch;
  if (globalThis.Headers === undefined) globalThis.Headers = Headers;
  if (globalThis.Response === undefined) globalThis.Response = Response;
  // Counted from the first reading, not from start-up: the component is
  // initialized when it is built, and its clock reads then are not the run's.
  let origin;
  const perf = globalThis.performance ?? (globalThis.performance = {});
  try {
    Object.defineProperty(perf, 'now', {
      value: () => {
        const now = Date.now();
        origin ??= now;
        return now - origin;
      },
      configurable: true,
    });
  } catch {
    // A frozen `performance`: keep the engine's.
  }
}
