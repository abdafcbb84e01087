// `cloudflare:workflows`: what a Cloudflare Workflow imports from it.
export { NonRetryableError } from './index.js';
