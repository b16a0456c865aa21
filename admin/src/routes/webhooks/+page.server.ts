import type { Actions, PageServerLoad } from './$types';
import { act, run } from '$lib/server/db';
import { compact } from '$lib/server/forms';

export const load: PageServerLoad = async ({ locals }) =>
  run(locals, async (tx) => ({
    endpoints: [...(await tx`select * from admin.webhook_endpoints order by name`)],
    deliveries: [...(await tx`select id, event_id, kind, event_at, endpoint_id, endpoint, status, attempts, next_attempt_at, last_attempt_at,
                                     last_status, last_error, delivered_at
                                from admin.webhook_deliveries order by id desc limit 50`)],
    kinds: (await tx`select k as kind from admin.event_kinds() k order by 1`).map((r) => r.kind as string),
    options: [...(await tx`select key, value, description from admin.options
                            where key in ('WebhookMaxAttempts', 'WebhookBackoffBaseMs', 'WebhookBackoffMaxMs', 'WebhookTimeoutMs',
                                          'AllowPrivateWebhooks', 'WalletLowBalanceMicros') order by key`)],
  }));

const id = (f: FormData) => String(f.get('id') ?? '');

export const actions: Actions = {
  create: async ({ request, locals }) => {
    const f = await request.formData();
    return act(locals, async (tx) => {
      const args = compact({
        name: String(f.get('name') ?? '').trim(),
        url: String(f.get('url') ?? '').trim(),
        kinds: f.getAll('kinds').map(String),
        description: String(f.get('description') ?? '').trim() || undefined,
      });
      const [{ w }] = await tx`select admin.webhook_create(${tx.json(args as never)}) as w`;
      return { created: { name: w.name as string, secret: w.secret as string } };
    });
  },
  toggle: async ({ request, locals }) => {
    const f = await request.formData();
    const enabled = f.get('enabled') === 'true';
    return act(locals, async (tx) => {
      const [{ w }] = await tx`select admin.webhook_update(${id(f)}, ${tx.json({ enabled })}) as w`;
      return { done: `${w.name} ${enabled ? 'enabled: its waiting deliveries go out now' : 'disabled: its deliveries wait until it is enabled again'}.` };
    });
  },
  test: async ({ request, locals }) => {
    const f = await request.formData();
    return act(locals, async (tx) => {
      const [{ e }] = await tx`select admin.webhook_test(${id(f)}) as e`;
      return { done: `Test event #${e} queued; its delivery shows below.` };
    });
  },
  resend: async ({ request, locals }) => {
    const f = await request.formData();
    return act(locals, async (tx) => {
      await tx`select admin.webhook_resend(${id(f)})`;
      return { done: `Delivery #${id(f)} goes out again now.` };
    });
  },
  delete: async ({ request, locals }) => {
    const f = await request.formData();
    return act(locals, async (tx) => {
      await tx`select admin.webhook_delete(${id(f)})`;
      return { done: 'Endpoint deleted, with its delivery log.' };
    });
  },
};
