// `cloudflare:workers`: what a Cloudflare Workflow imports from it.
export { WorkflowEntrypoint, WorkflowStep, NonRetryableError } from './index.js';
