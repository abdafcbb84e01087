// An order workflow in TypeScript, written against Cloudflare's published
// Workflows API: retries, Promise.all, a sleep, an event with a timeout and
// a rollback by hand. Every step reports to a loopback counter
// (`payload.counter`), so tests can tell how often each step body ran.
import { WorkflowEntrypoint, WorkflowEvent, WorkflowSleepDuration, WorkflowStep } from 'cloudflare:workers';
import { NonRetryableError } from 'cloudflare:workflows';

type Item = { sku: string; qty: number };
type Params = { orderId: string; items: Item[]; counter: string; approveWithin?: WorkflowSleepDuration; napMs?: number };
type Env = { API_KEY?: string };

async function hit(counter: string, what: string): Promise<number> {
  const res = await fetch(`${counter}/hit/${what}`, { method: 'POST' });
  if (!res.ok) throw new Error(`counter answered ${res.status}`);
  return Number(await res.text());
}

export class OrderWorkflow extends WorkflowEntrypoint<Env, Params> {
  async run(event: WorkflowEvent<Params>, step: WorkflowStep) {
    const { orderId, items, counter } = event.payload;

    const total = await step.do('validate', async () => {
      await hit(counter, 'validate');
      if (items.length === 0) throw new NonRetryableError(`order ${orderId} has no items`);
      return items.reduce((n, i) => n + i.qty, 0);
    });

    // Reserve every item at once.
    const reservations = await Promise.all(
      items.map((item) =>
        step.do(`reserve-${item.sku}`, async () => {
          await hit(counter, `reserve-${item.sku}`);
          return { sku: item.sku, id: `r-${item.sku}-${item.qty}` };
        }),
      ),
    );

    // Fails on its first attempt, then succeeds.
    const payment = await step.do(
      'charge',
      { retries: { limit: 3, delay: 50, backoff: 'constant' }, timeout: '30 seconds' },
      async (ctx) => {
        const n = await hit(counter, 'charge');
        if (ctx.attempt === 1) throw new Error(`card network busy (call ${n})`);
        return { charged: total * 10, attempt: ctx.attempt };
      },
    );

    await step.sleep('cool-off', event.payload.napMs ?? 200);

    try {
      const approval = await step.waitForEvent<{ by: string }>('approval', {
        type: 'approved',
        timeout: event.payload.approveWithin ?? '1 minute',
      });
      const shipped = await step.do('ship', async () => {
        await hit(counter, 'ship');
        return `shipped ${orderId}`;
      });
      return { status: 'shipped', total, reservations, payment, by: approval.payload.by, shipped };
    } catch (e) {
      // Rolled back by hand, newest first.
      await step.do('refund', async () => {
        await hit(counter, 'refund');
        return payment.charged;
      });
      const released: string[] = [];
      for (const r of [...reservations].reverse()) {
        released.push(
          await step.do(`release-${r.sku}`, async () => {
            await hit(counter, `release-${r.sku}`);
            return r.id;
          }),
        );
      }
      return { status: 'cancelled', reason: (e as Error).name, released };
    }
  }
}
