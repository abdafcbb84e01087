// How a component runs a workflow class: the module `weft build` generates
// exports `run = makeRun(module, className)`, the `run` export of the
// `workflow-sync` world.

import { durable, reset } from './ops.js';
import { WorkflowEntrypoint, WorkflowStep, errorInfo, makeEnv, toJson } from './index.js';
import { installGlobals } from './globals.js';

/** The `WorkflowEntrypoint` subclass a module exports. */
export function findWorkflow(module, className) {
  const found = Object.entries(module).filter(
    ([, v]) => typeof v === 'function' && v.prototype instanceof WorkflowEntrypoint,
  );
  if (className !== undefined) {
    const hit = found.find(([k, v]) => k === className || v.name === className);
    if (hit === undefined) throw new Error(`the module exports no WorkflowEntrypoint subclass named ${className}`);
    return hit[1];
  }
  if (found.length === 0) throw new Error('the module exports no WorkflowEntrypoint subclass');
  if (found.length > 1) {
    const names = found.map(([k]) => k).sort().join(', ');
    throw new Error(`the module exports several workflows (${names}); choose one with --class`);
  }
  return found[0][1];
}

/** An error as the `run` export returns it (componentize-js maps a thrown
 * value with a `payload` to the `err` case). */
function failure(info) {
  const e = new Error(info.message);
  e.payload = info;
  return e;
}

/** Builds the `run` export for a workflow class. */
export function makeRun(module, className) {
  const cls = findWorkflow(module, className);
  installGlobals();
  return async function run(event) {
    reset();
    let payload;
    try {
      payload = JSON.parse(event.payload);
    } catch (e) {
      throw failure({ name: 'InvalidInput', message: `the input is not JSON: ${e.message}` });
    }
    const ev = Object.freeze({
      payload,
      timestamp: new Date(Number(event.timestampMs)),
      instanceId: event.instanceId,
      workflowName: event.workflowName,
    });
    const step = new WorkflowStep();
    let result;
    try {
      const workflow = new cls({}, makeEnv());
      try {
        result = await workflow.run(ev, step);
      } catch (e) {
        if (step._run.rollbacks.length > 0) await step.rollbackAll(e);
        throw e;
      }
      return toJson(result, "the workflow's return value");
    } catch (e) {
      if (e instanceof Error && typeof e.stack === 'string' && e.stack !== '') {
        durable.errorDetail(`${e.name}: ${e.message}\n${e.stack}`);
      }
      throw failure(errorInfo(e));
    } finally {
      // Operations still in flight (the loser of a race, siblings of a
      // failure) are dropped with the run: the pump must not wait for them.
      reset();
    }
  };
}
