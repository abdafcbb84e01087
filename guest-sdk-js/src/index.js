// Durable workflows for weft, in JavaScript and TypeScript, with the API of
// Cloudflare Workflows:
//
//   import { WorkflowEntrypoint } from 'cloudflare:workers';
//   export class Checkout extends WorkflowEntrypoint {
//     async run(event, step) {
//       const receipt = await step.do('charge', async () => ({ ok: true }));
//       await step.sleep('cool-off', '10 seconds');
//       const approval = await step.waitForEvent('approval', { type: 'approved', timeout: '1 hour' });
//       return { receipt, by: approval.payload };
//     }
//   }
//
// `weft build app.ts` bundles it with this SDK (`cloudflare:workers` and
// `cloudflare:workflows` resolve here) and builds a component.

import { durable, enter, op, currentStep } from './ops.js';
import { toMs } from './duration.js';
import { fetch, Headers, Response } from './fetch.js';

const DEFAULT_RETRIES = { limit: 5, delay: '10 seconds', backoff: 'exponential' };
const DEFAULT_TIMEOUT = '10 minutes';
const DEFAULT_EVENT_TIMEOUT = '24 hours';
const MAX_U32 = 2 ** 32 - 1;

/** Thrown in a step to fail it at once, without further attempts. */
export class NonRetryableError extends Error {
  constructor(message, name) {
    super(message);
    this.name = name ?? 'NonRetryableError';
    this.nonRetryable = true;
  }
}

/** Thrown by `step.waitForEvent` when no event arrived in time. */
export class WaitTimeoutError extends Error {
  constructor(message) {
    super(message);
    this.name = 'WaitTimeoutError';
  }
}

/** An error rebuilt from the journal: its `name` and `message`. */
function rebuild(info) {
  let e;
  if (info.name === 'NonRetryableError') e = new NonRetryableError(info.message);
  else if (info.name === 'WaitTimeoutError') e = new WaitTimeoutError(info.message);
  else {
    e = new Error(info.message);
    e.name = info.name;
  }
  return e;
}

/** The `{name, message}` a thrown value is journaled as. */
export function errorInfo(e) {
  if (e instanceof Error) {
    const name = e.name && e.name !== 'Error' ? e.name : e.constructor?.name || 'Error';
    return { name: String(name), message: String(e.message) };
  }
  return { name: 'Error', message: String(e) };
}

/** JSON text of a value a step or workflow returns (undefined is null). */
export function toJson(value, what) {
  let text;
  try {
    text = JSON.stringify(value === undefined ? null : value);
  } catch (e) {
    throw new TypeError(`${what} is not JSON-serializable: ${e.message}`);
  }
  if (text === undefined) {
    throw new TypeError(`${what} is not JSON-serializable (a ${typeof value})`);
  }
  return text;
}

function parseConfig(name, config) {
  if (config === undefined || config === null) config = {};
  if (typeof config !== 'object') throw new TypeError(`step ${JSON.stringify(name)}: the config must be an object`);
  for (const key of Object.keys(config)) {
    if (!['retries', 'timeout', 'sensitive'].includes(key)) {
      throw new TypeError(`step ${JSON.stringify(name)}: unknown config key ${JSON.stringify(key)}`);
    }
  }
  const retries = { ...DEFAULT_RETRIES, ...(config.retries ?? {}) };
  for (const key of Object.keys(retries)) {
    if (!['limit', 'delay', 'backoff'].includes(key)) {
      throw new TypeError(`step ${JSON.stringify(name)}: unknown retries key ${JSON.stringify(key)}`);
    }
  }
  let limit = retries.limit;
  if (limit === Infinity) limit = MAX_U32;
  if (!Number.isInteger(limit) || limit < 0) {
    throw new TypeError(`step ${JSON.stringify(name)}: retries.limit must be a non-negative integer`);
  }
  if (!['constant', 'linear', 'exponential'].includes(retries.backoff)) {
    throw new TypeError(`step ${JSON.stringify(name)}: retries.backoff must be "constant", "linear" or "exponential"`);
  }
  if (typeof retries.delay === 'function') {
    throw new TypeError(`step ${JSON.stringify(name)}: weft does not support a delay function; give a duration`);
  }
  const delayMs = toMs(retries.delay, `step ${JSON.stringify(name)} retries.delay`);
  const timeout = config.timeout ?? DEFAULT_TIMEOUT;
  const timeoutMs = toMs(timeout, `step ${JSON.stringify(name)} timeout`);
  const wit = {
    retries: { limit: Math.min(limit, MAX_U32), delayMs: BigInt(delayMs), backoff: retries.backoff },
    timeoutMs: BigInt(Math.max(timeoutMs, 1)),
  };
  const effective = { retries: { ...retries, limit }, timeout };
  if (config.sensitive !== undefined) effective.sensitive = config.sensitive;
  return [wit, effective];
}

/** The state of one run: step counts, the config id of the default config. */
class RunState {
  constructor() {
    this.counts = new Map();
    this.defaultConfig = undefined;
    this.rollbacks = [];
  }

  count(name) {
    const n = (this.counts.get(name) ?? 0) + 1;
    this.counts.set(name, n);
    return n;
  }

  begin(name, config) {
    if (config === undefined) {
      if (this.defaultConfig === undefined) {
        const [wit, effective] = parseConfig(name, {});
        this.defaultConfig = [durable.registerStepConfig(wit), effective];
      }
      const [id, effective] = this.defaultConfig;
      return [durable.stepBeginWith(name, id), effective];
    }
    const [wit, effective] = parseConfig(name, config);
    return [durable.stepBegin(name, wit), effective];
  }
}

/** Runs one durable step: journaled result, retries, replay. */
async function runStep(run, name, config, callback) {
  const count = run.count(name);
  const [start, effective] = run.begin(name, config);
  if (start.tag === 'cached') {
    const r = start.val;
    if (r.tag === 'ok') return JSON.parse(r.val);
    throw rebuild(r.val);
  }
  const handle = start.val.handle;
  let attempt = start.val.attempt;
  if (!start.val.started) await op(durable.stepReady(handle));
  for (;;) {
    let outcome;
    try {
      const ctx = { step: { name, count }, attempt, config: effective };
      const value = await inStep(handle, () => callback(ctx));
      try {
        outcome = { tag: 'ok', val: toJson(value, `the value returned by step ${JSON.stringify(name)}`) };
      } catch (e) {
        outcome = { tag: 'non-retryable', val: errorInfo(e) };
      }
    } catch (e) {
      const tag = e instanceof NonRetryableError || e?.nonRetryable === true ? 'non-retryable' : 'err';
      outcome = { tag, val: errorInfo(e) };
    }
    const verdict = await op(durable.stepEnd(handle, outcome));
    if (verdict.tag === 'retry') {
      attempt = verdict.val;
      continue;
    }
    const r = verdict.val;
    if (r.tag === 'ok') return JSON.parse(r.val);
    throw rebuild(r.val);
  }
}

/** Calls a step body with the step marked as running while it runs. */
async function inStep(handle, body) {
  const outer = currentStep();
  enter(handle);
  let promise;
  try {
    promise = body();
  } finally {
    enter(outer);
  }
  return await promise;
}

/** The `step` argument of `run`: Cloudflare's `WorkflowStep`. */
export class WorkflowStep {
  #run;

  constructor(run) {
    this.#run = run ?? new RunState();
  }

  /**
   * `do(name, [config], callback, [rollback])`: runs `callback` as a
   * durable step and returns its result; after a replay, the journaled
   * result, without running it again.
   */
  async do(name, configOrCallback, callbackOrRollback, maybeRollback) {
    let config, callback, rollback;
    if (typeof configOrCallback === 'function') {
      [callback, rollback] = [configOrCallback, callbackOrRollback];
    } else {
      [config, callback, rollback] = [configOrCallback, callbackOrRollback, maybeRollback];
    }
    if (typeof name !== 'string' || name === '') throw new TypeError('step.do: the name must be a non-empty string');
    if (typeof callback !== 'function') throw new TypeError(`step.do(${JSON.stringify(name)}): the callback must be a function`);
    if (rollback !== undefined && typeof rollback?.rollback !== 'function') {
      throw new TypeError(`step.do(${JSON.stringify(name)}): rollback options need a \`rollback\` function`);
    }
    const output = await runStep(this.#run, name, config, callback);
    if (rollback !== undefined) {
      this.#run.rollbacks.push({ name, config: rollback.rollbackConfig ?? config, rollback: rollback.rollback, output });
    }
    return output;
  }

  /** Sleeps durably: milliseconds, or a string such as "10 seconds". */
  async sleep(name, duration) {
    const ms = toMs(duration, `step.sleep(${JSON.stringify(name)})`);
    await op(durable.sleep(name, BigInt(ms)));
  }

  /** Sleeps durably until a Date or a time in milliseconds since the epoch. */
  async sleepUntil(name, timestamp) {
    let ms;
    if (timestamp instanceof Date) ms = timestamp.getTime();
    else if (typeof timestamp === 'number') ms = timestamp;
    else throw new TypeError(`step.sleepUntil(${JSON.stringify(name)}): expected a Date or epoch milliseconds`);
    if (!Number.isFinite(ms)) throw new RangeError(`step.sleepUntil(${JSON.stringify(name)}): invalid time`);
    await op(durable.sleepUntil(name, BigInt(Math.max(Math.round(ms), 0))));
  }

  /** Waits for an event of `type`; returns `{payload, timestamp, type}`. */
  async waitForEvent(name, options) {
    const type = options?.type;
    if (typeof type !== 'string' || type === '') {
      throw new TypeError(`step.waitForEvent(${JSON.stringify(name)}): options.type must be a non-empty string`);
    }
    const timeoutMs = toMs(options.timeout ?? DEFAULT_EVENT_TIMEOUT, `step.waitForEvent(${JSON.stringify(name)}) timeout`);
    const r = await op(durable.waitForEvent(name, type, BigInt(timeoutMs)));
    if (r.tag === 'err') {
      throw new WaitTimeoutError(`no event of type ${JSON.stringify(type)} arrived for ${JSON.stringify(name)} within its timeout`);
    }
    const e = r.val;
    return { payload: JSON.parse(e.payload), timestamp: new Date(Number(e.timestampMs)), type: e.eventType };
  }

  /**
   * weft: starts the deployed workflow `workflow` (in any language) as a
   * child with `params` and returns its output, as one durable call. The
   * child's error is thrown with its name. Needs `weft serve`.
   */
  async runWorkflow(workflow, params = null, options = {}) {
    const name = options.name ?? workflow;
    const r = await op(durable.runWorkflow(name, workflow, toJson(params, `the params of workflow ${JSON.stringify(workflow)}`)));
    if (r.tag === 'err') throw rebuild(r.val);
    return JSON.parse(r.val);
  }

  /**
   * Runs the rollback of every completed step that has one, newest first,
   * each as a durable step named `<step>:undo`. `run` does this when the
   * workflow throws; call it to roll back by hand.
   */
  async rollbackAll(error) {
    const run = this.#run;
    while (run.rollbacks.length > 0) {
      const { name, config, rollback, output } = run.rollbacks.pop();
      await runStep(run, `${name}:undo`, config, async (ctx) => {
        await rollback({ ctx, error, output, stepName: name });
        return null;
      });
    }
  }

  get _run() {
    return this.#run;
  }
}

/** Secrets as properties, as Cloudflare bindings are: `this.env.API_KEY`. */
export function makeEnv() {
  return new Proxy(
    {},
    {
      get(_target, prop) {
        if (typeof prop !== 'string' || prop === 'then' || prop === 'toJSON') return undefined;
        return secret(prop);
      },
    },
  );
}

/** Reads a secret or config value of the workflow; only in step bodies. */
export function secret(name) {
  try {
    return durable.secret(name);
  } catch (e) {
    const info = e?.payload ?? e;
    const err = new Error(info?.message ?? String(e));
    err.name = info?.name ?? 'Error';
    throw err;
  }
}

/** The base class of a workflow: extend it and define `async run(event, step)`. */
export class WorkflowEntrypoint {
  constructor(ctx, env) {
    this.ctx = ctx ?? {};
    this.env = env ?? makeEnv();
  }

  async run(_event, _step) {
    throw new Error('a workflow must define `async run(event, step)`');
  }
}

export { fetch, Headers, Response, toMs };
