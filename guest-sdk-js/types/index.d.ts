// Types of the weft JavaScript SDK, shaped like Cloudflare's published
// `@cloudflare/workers-types` for Workflows, so that code written for
// Cloudflare type-checks unchanged.

export type WorkflowDurationLabel = 'second' | 'minute' | 'hour' | 'day' | 'week' | 'month' | 'year';
export type WorkflowSleepDuration = `${number} ${WorkflowDurationLabel}${'s' | ''}` | number;
export type WorkflowDelayDuration = WorkflowSleepDuration;
export type WorkflowTimeoutDuration = WorkflowSleepDuration;
export type WorkflowBackoff = 'constant' | 'linear' | 'exponential';
export type WorkflowStepSensitivity = 'output';

export type WorkflowStepConfig = {
  retries?: {
    limit: number;
    delay: WorkflowDelayDuration | number;
    backoff?: WorkflowBackoff;
  };
  timeout?: WorkflowTimeoutDuration | number;
  /** Accepted for compatibility; weft does not treat outputs differently. */
  sensitive?: WorkflowStepSensitivity;
};

export type WorkflowEvent<T> = {
  payload: Readonly<T>;
  timestamp: Date;
  instanceId: string;
  workflowName: string;
};

export type WorkflowStepEvent<T> = {
  payload: Readonly<T>;
  timestamp: Date;
  type: string;
};

export type WorkflowStepContext = {
  step: { name: string; count: number };
  attempt: number;
  config: WorkflowStepConfig;
};

export type WorkflowRollbackContext<T = unknown> = {
  ctx: WorkflowStepContext;
  error: Error;
  output: T | undefined;
  stepName: string;
};

export type WorkflowStepRollbackOptions<T = unknown> = {
  rollback: (ctx: WorkflowRollbackContext<T>) => Promise<void>;
  rollbackConfig?: Pick<WorkflowStepConfig, 'retries' | 'timeout'>;
};

export declare abstract class WorkflowStep {
  do<T>(
    name: string,
    callback: (ctx: WorkflowStepContext) => Promise<T>,
    rollbackOptions?: WorkflowStepRollbackOptions<T>,
  ): Promise<T>;
  do<T>(
    name: string,
    config: WorkflowStepConfig,
    callback: (ctx: WorkflowStepContext) => Promise<T>,
    rollbackOptions?: WorkflowStepRollbackOptions<T>,
  ): Promise<T>;
  sleep: (name: string, duration: WorkflowSleepDuration) => Promise<void>;
  sleepUntil: (name: string, timestamp: Date | number) => Promise<void>;
  waitForEvent<T>(
    name: string,
    options: { type: string; timeout?: WorkflowTimeoutDuration | number },
  ): Promise<WorkflowStepEvent<T>>;
  /** weft: runs the deployed workflow `workflow` as a child and returns its output. */
  runWorkflow<T = unknown>(workflow: string, params?: unknown, options?: { name?: string }): Promise<T>;
  /** weft: runs the rollbacks of the completed steps that have one, newest first. */
  rollbackAll(error?: unknown): Promise<void>;
}

export declare abstract class WorkflowEntrypoint<Env = unknown, T = unknown> {
  protected ctx: Record<string, unknown>;
  protected env: Env;
  constructor(ctx?: Record<string, unknown>, env?: Env);
  run(event: Readonly<WorkflowEvent<T>>, step: WorkflowStep): Promise<unknown>;
}

/** Thrown in a step to fail it at once, without further attempts. */
export declare class NonRetryableError extends Error {
  constructor(message: string, name?: string);
}

/** Thrown by `step.waitForEvent` when no event arrived in time. */
export declare class WaitTimeoutError extends Error {
  constructor(message: string);
}

/** Why `fetch` got no response; `name` is `Fetch<Kind>`. */
export declare class FetchError extends TypeError {}

/** Reads a secret or config value of the workflow; only in step bodies. */
export declare function secret(name: string): string;

/** Milliseconds of a duration: a number, or a string such as "10 seconds". */
export declare function toMs(value: WorkflowSleepDuration | string, what: string): number;
