// The event loop of a weft JavaScript workflow.
//
// componentize-js cannot call `async` imports, so the host's durable calls
// come from `weft:workflow/durable-sync`: a call that can wait starts an
// operation and returns its id, and `wait()` blocks until operations end.
// This module turns each operation into a Promise and runs a "pump" as a
// macrotask (`setTimeout(0)`, which runs only once the microtask queue is
// empty, i.e. once every step body and the workflow body is blocked on an
// operation): it asks the host for the operations that ended and settles
// their promises.
//
// The pump also tells the host which step body runs (`running-step`): the
// results of one wait are settled one owner at a time, each in its own
// macrotask, with the marker set to the step body (or the workflow body)
// that started the operation, so the CPU its continuation uses is charged
// to it.

import * as durable from 'weft:workflow/durable-sync@0.1.0';

const realSetTimeout = globalThis.setTimeout;

/** id -> { resolve, owner } */
const pending = new Map();
/** Settled results still to hand out: [owner, [[resolve, result], ...]]. */
const ready = [];
let scheduled = false;
/** The step handle (a BigInt) whose body runs, or undefined. */
let current;

export function currentStep() {
  return current;
}

/** Marks the step body that runs from now on (undefined: the workflow). */
export function enter(handle) {
  if (current !== handle) {
    current = handle;
    durable.runningStep(handle);
  }
}

function schedule() {
  if (!scheduled) {
    scheduled = true;
    realSetTimeout(pump, 0);
  }
}

function pump() {
  scheduled = false;
  if (ready.length === 0) {
    if (pending.size === 0) return;
    const byOwner = new Map();
    for (const [id, result] of durable.wait()) {
      const p = pending.get(id);
      if (p === undefined) continue;
      pending.delete(id);
      let group = byOwner.get(p.owner);
      if (group === undefined) byOwner.set(p.owner, (group = []));
      group.push([p.resolve, result]);
    }
    for (const entry of byOwner) ready.push(entry);
  }
  const next = ready.shift();
  if (next !== undefined) {
    const [owner, group] = next;
    enter(owner);
    for (const [resolve, result] of group) resolve(result.val);
  }
  if (ready.length > 0 || pending.size > 0) schedule();
}

/** A promise of what the operation `id` comes to (the payload of its
 * `op-result`). */
export function op(id) {
  return new Promise((resolve) => {
    pending.set(id, { resolve, owner: current });
    schedule();
  });
}

/** Forgets the operations in flight: the host drops them with the run. */
export function reset() {
  pending.clear();
  ready.length = 0;
  current = undefined;
}

export { durable };
