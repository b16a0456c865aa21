import type { PageServerLoad } from './$types';
import { run } from '$lib/server/db';

// What admin.audit_log can be narrowed to: the tables it watches, plus wallets and sessions.
const KINDS = ['api_keys', 'channels', 'channel_keys', 'credentials', 'groups', 'models', 'options', 'redemption_codes', 'sessions', 'users', 'wallets'];
const PAGE = 100;

// admin.audit_log, newest first, 100 at a time (?before=<id> for older entries); ?actor=, ?action=
// (a prefix: "admin.key" finds every key function), ?kind= and ?target= (table:id) narrow it.
export const load: PageServerLoad = async ({ locals, url }) =>
  run(locals, async (tx) => {
    const p = (k: string) => url.searchParams.get(k)?.trim() || null;
    const actor = p('actor');
    const action = p('action');
    const target = p('target');
    const kind = KINDS.includes(p('kind') ?? '') ? p('kind') : null;
    const beforeParam = p('before');
    const before = beforeParam && /^\d{1,18}$/.test(beforeParam) ? beforeParam : null;
    const rows = await tx`
      select * from admin.audit_log a
       where ${actor ? tx`a.actor = ${actor}` : tx`true`}
         and ${action ? tx`a.action like ${action.replace(/[\\%_]/g, (c) => `\\${c}`) + '%'}` : tx`true`}
         and ${kind ? tx`a.target_kind = ${kind}` : tx`true`}
         and ${target ? tx`a.target = ${target}` : tx`true`}
         and ${before ? tx`a.id < ${before}` : tx`true`}
       order by a.id desc limit ${PAGE + 1}`;
    const entries = rows.slice(0, PAGE).map((r) => ({ ...r }));
    return {
      entries,
      older: rows.length > PAGE ? String(entries[entries.length - 1].id) : null,
      filters: { actor, action, kind, target, before },
      kinds: KINDS,
    };
  });
