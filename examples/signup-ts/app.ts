// A signup flow in TypeScript, as it would be written for Cloudflare
// Workflows: create the account, email a verification link through an
// email API (its key is a secret), wait up to a day for the click, then
// either activate the account and send tips later, or delete it.
import { WorkflowEntrypoint, WorkflowEvent, WorkflowSleepDuration, WorkflowStep } from 'cloudflare:workers';
import { NonRetryableError } from 'cloudflare:workflows';

type Env = { EMAIL_API_KEY: string };
type Params = {
  email: string;
  name: string;
  /** Base URL of the email API. */
  emailApi: string;
  verifyWithin?: WorkflowSleepDuration;
  tipsAfter?: WorkflowSleepDuration;
};

export class SignupWorkflow extends WorkflowEntrypoint<Env, Params> {
  async run(event: WorkflowEvent<Params>, step: WorkflowStep) {
    const { email, name, emailApi } = event.payload;

    const user = await step.do('create account', async () => {
      if (!/^[^@\s]+@[^@\s]+$/.test(email)) {
        throw new NonRetryableError(`${email} is not an email address`);
      }
      return { id: `user-${event.instanceId}`, email, name };
    });

    // Randomness inside a step is journaled with its result.
    const token = await step.do('make verification token', async () =>
      Math.random().toString(36).slice(2, 12),
    );

    const send = async (kind: string, body: object) => {
      const res = await fetch(`${emailApi}/${kind}`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${this.env.EMAIL_API_KEY}`,
          'content-type': 'application/json',
        },
        body: JSON.stringify({ to: user.email, ...body }),
      });
      if (!res.ok) throw new Error(`the email API answered ${res.status}`);
      return { sent: kind };
    };
    const retries = { retries: { limit: 5, delay: '1 second', backoff: 'exponential' } } as const;

    await step.do('send verification email', retries, () => send('verify', { token }));

    let verified = false;
    try {
      const click = await step.waitForEvent<{ token: string }>('wait for the click', {
        type: 'email-verified',
        timeout: event.payload.verifyWithin ?? '24 hours',
      });
      verified = click.payload.token === token;
    } catch {
      // Timed out: the account is deleted below.
    }

    if (!verified) {
      await step.do('delete unverified account', async () => ({ deleted: user.id }));
      return { user: user.id, status: 'deleted' };
    }
    await step.do('activate account', async () => ({ active: user.id }));
    await step.sleep('wait before tips', event.payload.tipsAfter ?? '1 day');
    await step.do('send tips email', retries, () => send('tips', { name: user.name }));
    return { user: user.id, status: 'active' };
  }
}
