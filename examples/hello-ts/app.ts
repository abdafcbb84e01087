// The shortest weft workflow in TypeScript, written with Cloudflare
// Workflows' API: a step, a one-second durable sleep, another step.
import { WorkflowEntrypoint, WorkflowEvent, WorkflowStep } from 'cloudflare:workers';

type Params = { name: string };

export class Hello extends WorkflowEntrypoint<unknown, Params> {
  async run(event: WorkflowEvent<Params>, step: WorkflowStep) {
    const greeting = await step.do('greet', async () => `Hello, ${event.payload.name}!`);
    await step.sleep('pause', '1 second');
    const letters = await step.do('count', async () => event.payload.name.length * 2);
    return { greeting, letters };
  }
}
