-- Budgets with periods and per-model limits (issue 17), counted by admission and corrected by
-- settlement:
--   private.budgets       an amount per calendar day, week or month (in the BudgetTimeZone option's
--                         zone) for a key, a user or a group, for every model or one; its counters
--                         (period_start, spent_micros, reserved_micros) are on the row.
--   private.model_limits  RPM/TPM of one model for a key or a group, its rate window on the row.
-- Admission (private.admit_prepare, private.admit_write in sql/32-33) reads which apply
-- (private.limits_of, only for a key whose flag says one does), counts the request in them in the
-- same statement path as the wallet (private.limits_count) and, when one does not fit, refuses
-- exactly the requests that would be refused one at a time (private.limits_state, limits_admit,
-- limits_undo): 429 budget_exceeded (BUDGT) or model_rate_limited (MRLIM). Settlement
-- (private.settle) replaces the reservation with the bill (private.limits_settle) and raises
-- budget.threshold / budget.exhausted, once per period.
--
-- /* why the period on the row */ A budget's counters say which period they count (period_start).
-- Admission computes the current period from its clock and, when the row's is older, starts the
-- new one in the same UPDATE that reserves (as a key's rate window rolls its minute), so a budget
-- resets at midnight with no job having run. period_start never goes back. Reservations of
-- requests admitted in the old period move to older_reserved (held until they settle, but not
-- against the new period); their bills count in the period they were admitted in
-- (admissions.admitted_at), not in the new one.

-- private.admission_now: the clock of admission (key expiry, rate windows, budget periods) and of
-- budget settlement. One function, so a test moves time by replacing it in its own database instead
-- of sleeping across a minute or a midnight. (The admission's created_at, the request log's
-- partition key, stays the real now().)
create or replace function private.admission_now()
returns timestamptz
language sql stable
as $$ select now() $$;

comment on function private.admission_now() is
  E'The clock admission checks key expiry and counts rate windows and budget periods with (now()). Tests replace it in their throwaway database to move time.';

-- private.budget_period_start / budget_period_end: the calendar period (day, week from Monday,
-- month) holding p_at in the time zone p_tz.
create or replace function private.budget_period_start(p_period text, p_at timestamptz, p_tz text)
returns timestamptz
language sql stable
as $$ select date_trunc(p_period, p_at, p_tz) $$;

create or replace function private.budget_period_end(p_period text, p_at timestamptz, p_tz text)
returns timestamptz
language sql stable
as $$ select (date_trunc(p_period, p_at at time zone p_tz) + ('1 ' || p_period)::interval) at time zone p_tz $$;

comment on function private.budget_period_end(text, timestamptz, text) is
  E'When the calendar period (day, week, month) holding p_at in time zone p_tz ends: when a budget resets.';

-- private.limits_of: the budgets and the model limits one request counts in, each in id order
-- (the order rows are locked in). A budget applies when it names the key, its owner or their
-- group, for every model or for p_model; a model limit when it names the key or the group and p_model.
-- (A set-returning SQL function, so it is inlined into its caller's cached plan: called as a
-- function of its own, its statement was planned again at every call.)
create or replace function private.limits_of(p_key_id bigint, p_user_id bigint, p_group text, p_model text)
returns table (budget_ids bigint[], limit_ids bigint[])
language sql stable
as $$
  select (select array_agg(b.id order by b.id) from private.budgets b
           where (b.key_id = p_key_id or b.user_id = p_user_id or b.group_name = p_group)
             and (b.model is null or b.model = p_model)),
         (select array_agg(l.id order by l.id) from private.model_limits l
           where (l.key_id = p_key_id or l.group_name = p_group) and l.model = p_model)
$$;

-- private.limits_count: counts a call's admissions in their budgets (p_budget_amounts reserved per
-- budget) and model limits (p_limit_n requests, p_limit_tokens tokens per limit), rolling periods
-- and rate windows over at p_now; returns whether every row still fits. Rows are locked in id
-- order (budgets after the wallets and keys, as private.limits_settle takes them).
create or replace function private.limits_count(p_budget_ids bigint[], p_budget_amounts bigint[], p_limit_ids bigint[],
                                                p_limit_n integer[], p_limit_tokens bigint[], p_now timestamptz)
returns boolean
language plpgsql volatile
as $$
declare
  v_minute timestamptz := date_trunc('minute', p_now);
  v_window numeric := 1 - extract(epoch from p_now - date_trunc('minute', p_now)) / 60;
  v_tz text;
  v_budgets_fit boolean := true;
  v_limits_fit boolean := true;
begin
  if p_budget_ids is not null then
    v_tz := private.option_text('BudgetTimeZone');
    if cardinality(p_budget_ids) > 1 then
      perform 1 from private.budgets b where b.id = any(p_budget_ids) order by b.id for no key update;
    end if;
    with b as (
      update private.budgets b
         set spent_micros = case when b.period_start >= private.budget_period_start(b.period, p_now, v_tz)
                                 then b.spent_micros else 0 end,
             period_start = greatest(b.period_start, private.budget_period_start(b.period, p_now, v_tz)),
             older_reserved = b.older_reserved + case when b.period_start >= private.budget_period_start(b.period, p_now, v_tz)
                                                      then 0 else b.reserved_micros end,
             reserved_micros = case when b.period_start >= private.budget_period_start(b.period, p_now, v_tz)
                                    then b.reserved_micros else 0 end + x.amount
        from unnest(p_budget_ids, p_budget_amounts) x(id, amount)
       where b.id = any(p_budget_ids) and b.id = x.id
      returning b.spent_micros + b.reserved_micros <= b.amount_micros as fits
    )
    select coalesce(bool_and(b.fits), true) into v_budgets_fit from b;
  end if;
  if p_limit_ids is not null then
    if cardinality(p_limit_ids) > 1 then
      perform 1 from private.model_limits l where l.id = any(p_limit_ids) order by l.id for no key update;
    end if;
    with l as (
      update private.model_limits l
         set prev_requests = case when l.rate_minute >= v_minute then l.prev_requests
                                  when l.rate_minute = v_minute - interval '1 minute' then l.minute_requests else 0 end,
             prev_tokens = case when l.rate_minute >= v_minute then l.prev_tokens
                                when l.rate_minute = v_minute - interval '1 minute' then l.minute_tokens else 0 end,
             minute_requests = case when l.rate_minute >= v_minute then l.minute_requests else 0 end + x.n,
             minute_tokens = case when l.rate_minute >= v_minute then l.minute_tokens else 0 end + x.tokens,
             rate_minute = greatest(l.rate_minute, v_minute)
        from unnest(p_limit_ids, p_limit_n, p_limit_tokens) x(id, n, tokens)
       where l.id = any(p_limit_ids) and l.id = x.id
      returning (l.rpm_limit is null or l.minute_requests + l.prev_requests * v_window <= l.rpm_limit)
                and (l.tpm_limit is null or l.minute_tokens + l.prev_tokens * v_window <= l.tpm_limit) as fits
    )
    select coalesce(bool_and(l.fits), true) into v_limits_fit from l;
  end if;
  return v_budgets_fit and v_limits_fit;
end
$$;

-- private.limits_state: when something of a call did not fit, its budgets and model limits as they
-- were before the call's sums (the rows stay locked): per budget what is left, per limit the
-- requests and tokens in its window. private.limits_admit then decides request by request.
create or replace function private.limits_state(p_budget_ids bigint[], p_budget_amounts bigint[], p_limit_ids bigint[],
                                                p_limit_n integer[], p_limit_tokens bigint[], p_now timestamptz,
                                                out budget_ids bigint[], out budget_left bigint[],
                                                out limit_ids bigint[], out limit_requests numeric[], out limit_tokens numeric[])
language plpgsql stable
as $$
declare
  v_window numeric := 1 - extract(epoch from p_now - date_trunc('minute', p_now)) / 60;
begin
  select array_agg(b.id), array_agg(b.amount_micros - b.spent_micros - b.reserved_micros + x.amount)
    into budget_ids, budget_left
    from unnest(p_budget_ids, p_budget_amounts) x(id, amount) join private.budgets b on b.id = x.id;
  select array_agg(l.id), array_agg(l.minute_requests - x.n + l.prev_requests * v_window),
         array_agg(l.minute_tokens - x.tokens + l.prev_tokens * v_window)
    into limit_ids, limit_requests, limit_tokens
    from unnest(p_limit_ids, p_limit_n, p_limit_tokens) x(id, n, tokens) join private.model_limits l on l.id = x.id;
end
$$;

-- private.limits_admit: one request of a call that did not fit, decided against the state left by
-- the requests before it: its refusal (BUDGT, MRLIM), or null and the state with it counted.
create or replace function private.limits_admit(p_plan private.admit_plan, p_now timestamptz,
                                                budget_ids bigint[], inout budget_left bigint[],
                                                limit_ids bigint[], inout limit_requests numeric[], inout limit_tokens numeric[],
                                                out error jsonb)
language plpgsql stable
as $$
declare
  v_id bigint;
  j integer;
  v_limit private.model_limits;
begin
  foreach v_id in array coalesce(p_plan.budget_ids, '{}') loop
    j := array_position(budget_ids, v_id);   -- (null: the budget was cleared meanwhile)
    if j is not null and budget_left[j] < p_plan.reserved_micros then
      error := private.budget_refusal(v_id, budget_left[j], p_plan.reserved_micros, p_now);
      return;
    end if;
  end loop;
  foreach v_id in array coalesce(p_plan.limit_ids, '{}') loop
    j := array_position(limit_ids, v_id);
    continue when j is null;
    select * into v_limit from private.model_limits l where l.id = v_id;
    if v_limit.rpm_limit is not null and limit_requests[j] + 1 > v_limit.rpm_limit then
      error := private.model_limit_refusal(v_limit, 'rpm', null, p_now);
      return;
    elsif v_limit.tpm_limit is not null and limit_tokens[j] + p_plan.reserved_tokens > v_limit.tpm_limit then
      error := private.model_limit_refusal(v_limit, 'tpm', p_plan.reserved_tokens, p_now);
      return;
    end if;
  end loop;
  foreach v_id in array coalesce(p_plan.budget_ids, '{}') loop
    j := array_position(budget_ids, v_id);
    if j is not null then
      budget_left[j] := budget_left[j] - p_plan.reserved_micros;
    end if;
  end loop;
  foreach v_id in array coalesce(p_plan.limit_ids, '{}') loop
    j := array_position(limit_ids, v_id);
    if j is not null then
      limit_requests[j] := limit_requests[j] + 1;
      limit_tokens[j] := limit_tokens[j] + p_plan.reserved_tokens;
    end if;
  end loop;
end
$$;

-- private.limits_undo: takes back what the refused requests of a call added to their budgets and
-- model limits (their rows are still locked, in id order).
create or replace function private.limits_undo(p_refused private.admit_plan[])
returns void
language plpgsql volatile
as $$
begin
  update private.budgets b set reserved_micros = b.reserved_micros - x.amount
    from (select i.id, sum(p.reserved_micros)::bigint as amount
            from unnest(p_refused) p cross join unnest(p.budget_ids) i(id) group by i.id) x
   where b.id = x.id and x.amount <> 0;
  update private.model_limits l
     set minute_requests = l.minute_requests - x.n, minute_tokens = l.minute_tokens - x.tokens
    from (select i.id, count(*)::integer as n, sum(p.reserved_tokens)::bigint as tokens
            from unnest(p_refused) p cross join unnest(p.limit_ids) i(id) group by i.id) x
   where l.id = x.id;
end
$$;

-- private.limit_scope_label: who a budget or model limit is for, as a refusal or event names it.
create or replace function private.limit_scope_label(p_scope text, p_key_id bigint, p_user_id bigint, p_group text)
returns text
language sql stable
as $$
  select case p_scope
           when 'key' then format('the key %s', coalesce((select format('%s (%s)', k.key_prefix, nullif(k.name, ''))
                                                            from private.api_keys k where k.id = p_key_id), '#' || p_key_id))
           when 'user' then format('the user %s', coalesce((select u.username from private.users u where u.id = p_user_id), '#' || p_user_id))
           else format('the group %s', p_group) end
$$;

-- private.budget_refusal: the refusal of a request that a budget cannot cover: 429
-- budget_exceeded, naming the budget, its period and when it resets (retry_after: the seconds until then).
create or replace function private.budget_refusal(p_id bigint, p_left bigint, p_needed bigint, p_now timestamptz)
returns jsonb
language plpgsql stable
as $$
declare
  v_b private.budgets;
  v_reset timestamptz;
begin
  select * into v_b from private.budgets b where b.id = p_id;
  v_reset := private.budget_period_end(v_b.period, greatest(p_now, v_b.period_start), private.option_text('BudgetTimeZone'));
  return private.refusal_json('BUDGT',
    format('Budget exceeded: the %s budget of %s%s is %s micro-USD, and %s of it is spent or reserved this %s; this request needs up to %s. It resets at %s.',
           case v_b.period when 'day' then 'daily' else v_b.period || 'ly' end,
           private.limit_scope_label(v_b.scope, v_b.key_id, v_b.user_id, v_b.group_name),
           case when v_b.model is not null then format(' for the model `%s`', v_b.model) else '' end,
           v_b.amount_micros, v_b.amount_micros - p_left, v_b.period, p_needed,
           to_char(v_reset at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')),
    null, 'Wait for the reset, lower max_tokens, or ask your operator to raise the budget (admin.budget_set).', null,
    'budget', greatest(ceil(extract(epoch from v_reset - p_now))::integer, 1));
end
$$;

-- private.model_limit_refusal: 429 model_rate_limited (MRLIM), naming the model and the limit.
create or replace function private.model_limit_refusal(p_limit private.model_limits, p_which text, p_tokens integer,
                                                       p_now timestamptz)
returns jsonb
language sql stable
as $$
  select private.refusal_json('MRLIM',
    format('Rate limit reached for the model `%s`: %s allows %s %s per minute for it%s.',
           p_limit.model, private.limit_scope_label(p_limit.scope, p_limit.key_id, null, p_limit.group_name),
           case p_which when 'rpm' then p_limit.rpm_limit else p_limit.tpm_limit end,
           case p_which when 'rpm' then 'requests' else 'tokens' end,
           case when p_which = 'tpm' then format(', and this request may use %s', p_tokens) else '' end),
    null, null, null, 'model_' || p_which,
    greatest(ceil(60 - extract(epoch from p_now - date_trunc('minute', p_now)))::integer, 1))
$$;

-- private.limits_settle: settlement's half (private.settle, once per batch that has requests with
-- budgets or model limits). p_rows: per such request {budgets, limits (ids), reserved, amount (the
-- bill), at (the admission's clock), tokens (used less reserved)}. A budget's reservation is
-- released (from older_reserved when the budget has rolled over since); the bill counts in the
-- budget's spend when the request was admitted in the period the budget counts now (a bill of an
-- older period belongs to that period). A model limit's TPM window gets the tokens' correction in
-- the minute the request was counted in, if that is still in the window (as a key's, in
-- private.settle). Then the budgets' crossings are raised, once per period each. Rows are locked
-- in id order, budgets then model limits, after the wallets and keys, as admission takes them.
/* why the crossings are detected here, not at admission nor by a trigger: the hot tables carry no
   trigger, and admission is the request path, where an event would be one more insert (and its
   fan-out) in the client's round trip. Settlement runs in batches off the request path and is
   where spend changes: a budget's spend crosses its threshold or its amount only here. The
   "once per period" marks (threshold_alerted, exhausted_alerted = the period_start alerted) are
   columns of the row this function updates anyway; a new period re-arms both. budget.exhausted is
   the settled spend reaching the amount (refusals alone, with nothing settled, raise nothing). */
create or replace function private.limits_settle(p_rows jsonb)
returns void
language plpgsql volatile
as $$
declare
  v_tz text;
  v_now timestamptz := private.admission_now();
  v_ids bigint[];
  v_lids bigint[];
  v_n integer;
begin
  select array_agg(distinct b.id order by b.id) into v_ids
    from jsonb_to_recordset(p_rows) x(budgets bigint[]) cross join unnest(x.budgets) b(id);
  select array_agg(distinct l.id order by l.id) into v_lids
    from jsonb_to_recordset(p_rows) x(limits bigint[]) cross join unnest(x.limits) l(id);
  if v_ids is not null then
    v_tz := private.option_text('BudgetTimeZone'); -- (for the events' resets_at, below)
    perform 1 from private.budgets b where b.id = any(v_ids) order by b.id for update;
    update private.budgets b
       set reserved_micros = greatest(b.reserved_micros - s.reserved, 0),
           older_reserved = greatest(b.older_reserved - s.older_reserved, 0),
           spent_micros = b.spent_micros + s.spent,
           updated_at = now()
      from (select x.id,
                   coalesce(sum(x.reserved) filter (where x.current), 0)::bigint as reserved,
                   coalesce(sum(x.reserved) filter (where not x.current), 0)::bigint as older_reserved,
                   coalesce(sum(x.amount) filter (where x.current), 0)::bigint as spent
              -- (current: admitted since the period the budget counts now began. Admission counted
              -- it there, and a rollover since would have moved period_start past it. Not the start
              -- of x.at's period recomputed: that differs from period_start after BudgetTimeZone
              -- changes, until the new zone's next period.)
              from (select i.id, x.reserved, x.amount, x.at >= b.period_start as current
                      from jsonb_to_recordset(p_rows) x(budgets bigint[], reserved bigint, amount bigint, at timestamptz)
                      cross join unnest(x.budgets) i(id)
                      join private.budgets b on b.id = i.id) x
             group by x.id) s
     where b.id = s.id;
  end if;
  if v_lids is not null then
    perform 1 from private.model_limits l where l.id = any(v_lids) order by l.id for update;
    update private.model_limits l
       set minute_tokens = greatest(l.minute_tokens + s.cur, 0),
           prev_tokens = greatest(l.prev_tokens + s.prev, 0)
      from (select i.id,
                   coalesce(sum(x.tokens) filter (where date_trunc('minute', x.at) = m.rate_minute), 0) as cur,
                   coalesce(sum(x.tokens) filter (where date_trunc('minute', x.at) = m.rate_minute - interval '1 minute'), 0) as prev
              from jsonb_to_recordset(p_rows) x(limits bigint[], tokens bigint, at timestamptz)
              cross join unnest(x.limits) i(id)
              join private.model_limits m on m.id = i.id
             group by i.id) s
     where l.id = s.id and (s.cur <> 0 or s.prev <> 0);
  end if;
  if v_ids is null then
    return;
  end if;
  with t as (
    update private.budgets b set threshold_alerted = b.period_start
     where b.id = any(v_ids) and b.threshold_percent is not null
       and b.spent_micros * 100 >= b.amount_micros * b.threshold_percent
       and b.threshold_alerted is distinct from b.period_start
    returning b.*
  )
  select count(private.event_emit('budget.threshold', private.budget_event(t, v_tz, v_now)))::integer into v_n from t;
  with t as (
    update private.budgets b set exhausted_alerted = b.period_start
     where b.id = any(v_ids) and b.spent_micros >= b.amount_micros
       and b.exhausted_alerted is distinct from b.period_start
    returning b.*
  )
  select count(private.event_emit('budget.exhausted', private.budget_event(t, v_tz, v_now)))::integer into v_n from t;
end
$$;

-- private.budget_event: a budget event's payload.
create or replace function private.budget_event(p_b private.budgets, p_tz text, p_now timestamptz)
returns jsonb
language sql stable
as $$
  select jsonb_build_object('budget_id', p_b.id, 'scope', p_b.scope, 'key_id', p_b.key_id, 'user_id', p_b.user_id,
                            'group', p_b.group_name, 'model', p_b.model, 'period', p_b.period,
                            'period_start', p_b.period_start,
                            'resets_at', private.budget_period_end(p_b.period, p_b.period_start, p_tz),
                            'amount_micros', p_b.amount_micros, 'spent_micros', p_b.spent_micros,
                            'threshold_percent', p_b.threshold_percent,
                            'name', private.limit_scope_label(p_b.scope, p_b.key_id, p_b.user_id, p_b.group_name),
                            'at', p_now)
$$;

-- The flags admission reads with the key (api_keys, users, groups .scoped_limits): true while a
-- budget or a model limit names the row. Kept by these triggers, which fire only when an operator
-- adds, removes or re-targets a budget or limit (admission's updates name none of these columns).
create or replace function private.tg_scoped_limits__flags()
returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  v_rows jsonb := jsonb_build_array(to_jsonb(old), to_jsonb(new));   -- (null rows as JSON null)
begin
  update private.api_keys k
     set scoped_limits = exists (select 1 from private.budgets b where b.key_id = k.id)
                         or exists (select 1 from private.model_limits l where l.key_id = k.id)
   where k.id in (select (r ->> 'key_id')::bigint from jsonb_array_elements(v_rows) r where r <> 'null')
     and k.scoped_limits is distinct from (exists (select 1 from private.budgets b where b.key_id = k.id)
                                           or exists (select 1 from private.model_limits l where l.key_id = k.id));
  update private.users u
     set scoped_limits = exists (select 1 from private.budgets b where b.user_id = u.id)
   where u.id in (select (r ->> 'user_id')::bigint from jsonb_array_elements(v_rows) r where r <> 'null')
     and u.scoped_limits is distinct from exists (select 1 from private.budgets b where b.user_id = u.id);
  update private.groups g
     set scoped_limits = exists (select 1 from private.budgets b where b.group_name = g.name)
                         or exists (select 1 from private.model_limits l where l.group_name = g.name)
   where g.name in (select r ->> 'group_name' from jsonb_array_elements(v_rows) r where r <> 'null')
     and g.scoped_limits is distinct from (exists (select 1 from private.budgets b where b.group_name = g.name)
                                           or exists (select 1 from private.model_limits l where l.group_name = g.name));
  return null;
end
$$;

create or replace trigger _500_scoped_limits after insert or delete or update of key_id, user_id, group_name
  on private.budgets for each row execute function private.tg_scoped_limits__flags();
create or replace trigger _500_scoped_limits after insert or delete or update of key_id, group_name
  on private.model_limits for each row execute function private.tg_scoped_limits__flags();
