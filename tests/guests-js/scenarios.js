// A JavaScript test workflow whose behaviour is chosen by
// payload.scenario; tests/e2e/javascript.rs drives it. `Changed` is the
// same workflow with one wait renamed, for the non-determinism tests.
import { WorkflowEntrypoint } from 'cloudflare:workers';
import { NonRetryableError } from 'cloudflare:workflows';

async function hit(counter, what) {
  const res = await fetch(`${counter}/hit/${what}`, { method: 'POST' });
  return Number(await res.text());
}

export class Scenarios extends WorkflowEntrypoint {
  waitName = 'wait-second';

  async run(event, step) {
    const p = event.payload;
    return await this[`s_${p.scenario.replaceAll('-', '_')}`](event, step, p);
  }

  async s_basic(event, step) {
    const a = await step.do('a', async () => 20);
    const b = a + (await step.do('b', async () => 22));
    const greeting = await step.do('greet', async () => `hello ${event.instanceId}`);
    return { a, b, greeting };
  }

  // Many steps, each reporting to the counter, with a sleep between.
  async s_long(event, step, p) {
    // Clocks and randomness outside steps are journaled: a replay reads
    // what the first run read, which this step kept.
    const r = Math.random();
    const t = Date.now();
    const first = await step.do('first', async () => [r, t]);
    const seen = [];
    for (let i = 0; i < p.n; i++) {
      seen.push(await step.do(`work-${i}`, async () => {
        await hit(p.counter, `work-${i}`);
        return i * i;
      }));
      await step.sleep(`gap-${i}`, p.ms);
    }
    return { sum: seen.reduce((a, b) => a + b, 0), r, t, first };
  }

  async s_events(event, step) {
    const first = await step.waitForEvent('wait-first', { type: 'first' });
    const second = await step.waitForEvent(this.waitName, { type: 'second', timeout: '1 hour' });
    return { first: first.payload, second: second.payload, type: second.type };
  }

  async s_fail(event, step) {
    await step.do('boom', { retries: { limit: 0, delay: 0 } }, async () => {
      throw new NonRetryableError('order 42 has no items', 'InvalidOrder');
    });
  }

  async s_parent(event, step, p) {
    const child = p.child;
    const ok = await step.runWorkflow(child, { scenario: 'basic' });
    try {
      await step.runWorkflow(child, { scenario: 'fail' });
    } catch (e) {
      return { child: ok, error: [e.name, e.message] };
    }
    return { child: ok, error: null };
  }

  async s_race(event, step) {
    const winner = await Promise.race([
      step.sleep('short', 50).then(() => 'sleep'),
      step.waitForEvent('never', { type: 'never', timeout: '1 hour' }).then(() => 'event'),
    ]);
    return { winner };
  }

  // As the Rust scenario "step-cpu": one step waits on a slow server past
  // the CPU limit, one spins beside it.
  async s_step_cpu(event, step, p) {
    const waitSlow = step.do('wait-slow', { retries: { limit: 0, delay: 0 } }, async () => {
      const r = await fetch(p.url);
      return r.status;
    });
    const spin = step
      .do('spin', { retries: { limit: 1, delay: 10 } }, async () => {
        await new Promise((r) => setTimeout(r, 50));
        for (;;) {}
      })
      .catch((e) => [e.name, e.message]);
    const [waited, [name, message]] = await Promise.all([waitSlow, spin]);
    return { waited, spun: name, message };
  }

  // The benchmark's workloads (bench/src), as the Rust and Python guests
  // have them.
  async s_noop() {
    return null;
  }

  async s_loop(event, step, p) {
    const out = [];
    for (let i = 0; i < p.n; i++) out.push(await step.do('tick', async () => i * 10));
    return out;
  }

  async s_sleep(event, step, p) {
    const before = await step.do('before', async () => 1);
    await step.sleep('nap', p.ms);
    await step.sleepUntil('until', Date.now() + 200);
    const after = await step.do('after', async () => before + 1);
    return { before, after };
  }

  async s_event_timeout(event, step, p) {
    try {
      await step.waitForEvent('approval', { type: 'approve', timeout: p.ms ?? 300 });
    } catch (e) {
      return { timedOut: true, error: e.name };
    }
    return { timedOut: false };
  }

  async s_steps_then_wait(event, step, p) {
    const done = await this.s_loop(event, step, p);
    const ev = await step.waitForEvent('go', { type: 'go' });
    // When the step after the replay started (µs), for the benchmark.
    const last = await step.do('last', async () => Date.now() * 1000);
    return { steps: done.length, event: ev.payload, last };
  }

  async s_io_outside(event, step) {
    try {
      await fetch('http://127.0.0.1:9/x');
      return 'fetched';
    } catch (e) {
      return { name: e.name, message: e.message };
    }
  }
}

// The same workflow under another name: another component whose replay
// matches, for the upgrade test.
export class Compatible extends Scenarios {}

export class Changed extends Scenarios {
  waitName = 'wait-renamed';
}
