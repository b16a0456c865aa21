import type { PageServerLoad } from './$types';
import { run } from '$lib/server/db';

export const load: PageServerLoad = async ({ locals }) =>
  run(locals, async (tx) => ({
    cron: { ...(await tx`select * from admin.cron_status`)[0] },
    jobs: [...(await tx`select * from admin.jobs`)],
    partitions: [...(await tx`select * from admin.partitions order by name desc`)],
    retention: (await tx`select key, value, description from admin.options where key in ('LogRetentionDays', 'PartitionDaysAhead') order by key`).map((r) => ({ ...r })),
  }));
