// `cloudflare:workers` and `cloudflare:workflows`, as weft provides them.
declare module 'cloudflare:workers' {
  export {
    WorkflowEntrypoint,
    WorkflowStep,
    WorkflowEvent,
    WorkflowStepEvent,
    WorkflowStepConfig,
    WorkflowStepContext,
    WorkflowSleepDuration,
    WorkflowDelayDuration,
    WorkflowTimeoutDuration,
    WorkflowBackoff,
    WorkflowDurationLabel,
    WorkflowStepRollbackOptions,
    WorkflowRollbackContext,
    NonRetryableError,
  } from '@weft/sdk';
}

declare module 'cloudflare:workflows' {
  export { NonRetryableError } from '@weft/sdk';
}
