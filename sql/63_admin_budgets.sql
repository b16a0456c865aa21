-- Budgets and per-model limits for operators (sql/36_budgets.sql): admin.budget_set /
-- budget_clear, admin.model_limit_set / model_limit_clear, and the views admin.budgets and
-- admin.model_limits. Documented in docs/psql.md.

-- private.limit_target: the key, user or group a budget or model limit is for, from its arguments
-- (exactly one of "key_id", "user_id", "group"), checked to exist. p_scopes: the kinds allowed.
create or replace function private.limit_target(p_args jsonb, p_what text, p_scopes text[],
                                                out scope text, out key_id bigint, out user_id bigint, out group_name text)
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
declare
  v_fields text[] := array(select f from unnest(array['key_id', 'user_id', 'group']) f
                            where p_args ? f and p_args -> f <> 'null'::jsonb);
  v_allowed text := array_to_string(array(select format('"%s"', case s when 'key' then 'key_id' when 'user' then 'user_id' else 'group' end)
                                            from unnest(p_scopes) s), ', ');
begin
  if cardinality(v_fields) <> 1 or not (case v_fields[1] when 'key_id' then 'key' when 'user_id' then 'user' else 'group' end = any(p_scopes)) then
    raise exception using errcode = 'BADIN', column = coalesce(v_fields[2], v_fields[1], p_scopes[1] || case when p_scopes[1] = 'group' then '' else '_id' end),
      message = format('%s needs exactly one of %s (who it is for), got %s.', p_what, v_allowed,
                       coalesce(array_to_string(array(select format('"%s"', f) from unnest(v_fields) f), ', '), 'none'));
  end if;
  if v_fields[1] = 'key_id' then
    scope := 'key';
    key_id := private.arg_int(p_args, 'key_id', 1, 9223372036854775807);
    if not exists (select 1 from private.api_keys k where k.id = key_id) then
      raise exception using errcode = 'BADIN', column = 'key_id', message = format('No key with id %s.', key_id);
    end if;
  elsif v_fields[1] = 'user_id' then
    scope := 'user';
    user_id := private.arg_int(p_args, 'user_id', 1, 9223372036854775807);
    if not exists (select 1 from private.users u where u.id = user_id) then
      raise exception using errcode = 'BADIN', column = 'user_id', message = format('No user with id %s.', user_id);
    end if;
  else
    scope := 'group';
    group_name := p_args ->> 'group';
    if not exists (select 1 from private.groups g where g.name = group_name) then
      raise exception using errcode = 'BADIN', column = 'group', message = format('No group named "%s".', left(group_name, 100));
    end if;
  end if;
end
$$;

-- private.limit_model: the "model" argument: null (every model) unless p_required, else a model
-- the gateway knows (priced, or served by a channel).
create or replace function private.limit_model(p_args jsonb, p_required boolean)
returns text
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
declare
  v_model text := nullif(btrim(p_args ->> 'model'), '');
begin
  if v_model is null and p_required then
    raise exception using errcode = 'BADIN', column = 'model', message = 'A model limit needs "model": the model it limits.';
  end if;
  if v_model is not null and not private.model_known(v_model) then
    raise exception using errcode = 'BADIN', column = 'model',
      message = format('Unknown model "%s": name a model that has a price or that a channel serves.', left(v_model, 100));
  end if;
  return v_model;
end
$$;

-- private.budget_period_arg: the "period" argument.
create or replace function private.budget_period_arg(p_args jsonb)
returns text
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
begin
  if p_args ->> 'period' is null or p_args ->> 'period' not in ('day', 'week', 'month') then
    raise exception using errcode = 'BADIN', column = 'period',
      message = format('"period" must be "day", "week" or "month", got %s.', coalesce(format('"%s"', left(p_args ->> 'period', 40)), 'none'));
  end if;
  return p_args ->> 'period';
end
$$;

create or replace view admin.budgets as
  select b.id, b.scope, b.key_id, k.key_prefix, k.name as key_name, b.user_id, u.username, b.group_name as "group",
         b.model, b.period, b.amount_micros, b.threshold_percent,
         c.period_start, c.spent_micros, c.reserved_micros,
         greatest(b.amount_micros - c.spent_micros - c.reserved_micros, 0) as remaining_micros,
         (date_trunc(b.period, c.period_start at time zone o.tz) + ('1 ' || b.period)::interval) at time zone o.tz as resets_at,
         b.threshold_alerted = c.period_start as threshold_alerted, b.exhausted_alerted = c.period_start as exhausted_alerted,
         b.created_at, b.updated_at
    from private.budgets b
    cross join (select o.value as tz from private.options o where o.key = 'BudgetTimeZone') o
    -- The period counted now: the row's when it is current (admission rolls it over lazily), else
    -- the calendar's, with nothing spent yet.
    cross join lateral (select case when b.period_start >= date_trunc(b.period, now(), o.tz) then b.period_start
                                    else date_trunc(b.period, now(), o.tz) end as period_start,
                               case when b.period_start >= date_trunc(b.period, now(), o.tz) then b.spent_micros
                                    else 0 end as spent_micros,
                               case when b.period_start >= date_trunc(b.period, now(), o.tz) then b.reserved_micros
                                    else 0 end as reserved_micros) c
    left join private.api_keys k on k.id = b.key_id
    left join private.users u on u.id = b.user_id;

comment on view admin.budgets is
  E'Every budget: who it is for (scope: key, user or group), the model (null: every model), period (day, week, month in BudgetTimeZone), amount, threshold; in the current period what is spent (settled), reserved (in flight) and remaining, and when it resets.';

-- admin.budget_set: creates or changes a budget.
create or replace function admin.budget_set(p_args jsonb)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_t record;
  v_model text;
  v_period text;
  v_amount bigint;
  v_threshold integer;
  v_before private.budgets;
  v_b private.budgets;
begin
  perform private.args_check(p_args, array['key_id', 'user_id', 'group', 'model', 'period', 'amount_micros', 'threshold_percent'],
                             'admin.budget_set');
  select * into v_t from private.limit_target(p_args, 'admin.budget_set', array['key', 'user', 'group']);
  v_model := private.limit_model(p_args, false);
  v_period := private.budget_period_arg(p_args);
  v_amount := private.arg_int(p_args, 'amount_micros', 1, 9223372036854775807);
  if v_amount is null then
    raise exception using errcode = 'BADIN', column = 'amount_micros', message = 'A budget needs "amount_micros": what it allows per period, in micro-USD.';
  end if;
  v_threshold := private.arg_int(p_args, 'threshold_percent', 1, 100);
  -- Two sessions setting the same new budget at once: the second waits here, then changes the
  -- row the first made (a row lock alone cannot hold a row that does not exist yet).
  perform pg_advisory_xact_lock(hashtext(format('budget %s %s %s %s %s %s', v_t.scope, v_t.key_id, v_t.user_id, v_t.group_name, v_model, v_period)));
  select * into v_before from private.budgets b
   where b.scope = v_t.scope and b.key_id is not distinct from v_t.key_id and b.user_id is not distinct from v_t.user_id
     and b.group_name is not distinct from v_t.group_name and b.model is not distinct from v_model and b.period = v_period
   for update;
  if v_before.id is null then
    insert into private.budgets (scope, key_id, user_id, group_name, model, period, amount_micros, threshold_percent)
    values (v_t.scope, v_t.key_id, v_t.user_id, v_t.group_name, v_model, v_period, v_amount, v_threshold)
    returning * into v_b;
  else
    update private.budgets b set amount_micros = v_amount, threshold_percent = v_threshold, updated_at = now()
     where b.id = v_before.id returning * into v_b;
  end if;
  perform private.audit('budgets:' || v_b.id,
    case when v_before.id is not null then to_jsonb(v_before) - array['period_start', 'spent_micros', 'reserved_micros', 'threshold_alerted', 'exhausted_alerted', 'updated_at'] end,
    to_jsonb(v_b) - array['period_start', 'spent_micros', 'reserved_micros', 'threshold_alerted', 'exhausted_alerted', 'updated_at']);
  return (select to_jsonb(a) from admin.budgets a where a.id = v_b.id);
end
$$;

comment on function admin.budget_set(jsonb) is
  E'Creates or changes a budget: {"key_id" | "user_id" | "group" (one), "model" (optional: one model; absent: every model), "period" (day, week, month), "amount_micros", "threshold_percent" (optional: raises budget.threshold)}. One budget per target, model and period; returns it as admin.budgets shows it.';

-- admin.budget_clear: removes a budget, by {"id"} or by what budget_set names it with.
create or replace function admin.budget_clear(p_args jsonb)
returns boolean
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_t record;
  v_b private.budgets;
begin
  perform private.args_check(p_args, array['id', 'key_id', 'user_id', 'group', 'model', 'period'], 'admin.budget_clear');
  if p_args ? 'id' then
    delete from private.budgets b where b.id = private.arg_int(p_args, 'id', 1, 9223372036854775807) returning * into v_b;
  else
    select * into v_t from private.limit_target(p_args, 'admin.budget_clear', array['key', 'user', 'group']);
    delete from private.budgets b
     where b.scope = v_t.scope and b.key_id is not distinct from v_t.key_id and b.user_id is not distinct from v_t.user_id
       and b.group_name is not distinct from v_t.group_name
       and b.model is not distinct from nullif(btrim(p_args ->> 'model'), '') and b.period = private.budget_period_arg(p_args)
    returning * into v_b;
  end if;
  if v_b.id is null then
    return false;
  end if;
  perform private.audit('budgets:' || v_b.id, to_jsonb(v_b) - array['threshold_alerted', 'exhausted_alerted', 'updated_at'], null);
  return true;
end
$$;

comment on function admin.budget_clear(jsonb) is
  E'Removes a budget: {"id"}, or {"key_id" | "user_id" | "group", "model" (absent: the every-model budget), "period"}. Returns whether one was removed. Requests in flight settle without it.';

create or replace view admin.model_limits as
  select l.id, l.scope, l.key_id, k.key_prefix, k.name as key_name, l.group_name as "group", l.model, l.rpm_limit, l.tpm_limit,
         case when l.rate_minute = date_trunc('minute', now()) then l.minute_requests else 0 end as minute_requests,
         case when l.rate_minute = date_trunc('minute', now()) then l.minute_tokens else 0 end as minute_tokens,
         l.created_at, l.updated_at
    from private.model_limits l
    left join private.api_keys k on k.id = l.key_id;

comment on view admin.model_limits is
  E'Per-model RPM/TPM limits of keys and groups, with the requests and tokens counted in the current minute.';

-- admin.model_limit_set: creates or changes the RPM/TPM of one model for a key or a group.
create or replace function admin.model_limit_set(p_args jsonb)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_t record;
  v_model text;
  v_rpm integer;
  v_tpm integer;
  v_before private.model_limits;
  v_l private.model_limits;
begin
  perform private.args_check(p_args, array['key_id', 'group', 'model', 'rpm_limit', 'tpm_limit'], 'admin.model_limit_set');
  select * into v_t from private.limit_target(p_args, 'admin.model_limit_set', array['key', 'group']);
  v_model := private.limit_model(p_args, true);
  v_rpm := private.arg_int(p_args, 'rpm_limit', 1, 2147483647);
  v_tpm := private.arg_int(p_args, 'tpm_limit', 1, 2147483647);
  if num_nonnulls(v_rpm, v_tpm) = 0 then
    raise exception using errcode = 'BADIN', column = 'rpm_limit',
      message = 'A model limit needs "rpm_limit", "tpm_limit" or both (admin.model_limit_clear removes one).';
  end if;
  -- (as admin.budget_set: a second session setting the same new limit waits, then changes it)
  perform pg_advisory_xact_lock(hashtext(format('model limit %s %s %s %s', v_t.scope, v_t.key_id, v_t.group_name, v_model)));
  select * into v_before from private.model_limits l
   where l.scope = v_t.scope and l.key_id is not distinct from v_t.key_id and l.group_name is not distinct from v_t.group_name
     and l.model = v_model
   for update;
  if v_before.id is null then
    insert into private.model_limits (scope, key_id, group_name, model, rpm_limit, tpm_limit)
    values (v_t.scope, v_t.key_id, v_t.group_name, v_model, v_rpm, v_tpm)
    returning * into v_l;
  else
    update private.model_limits l set rpm_limit = v_rpm, tpm_limit = v_tpm, updated_at = now()
     where l.id = v_before.id returning * into v_l;
  end if;
  perform private.audit('model_limits:' || v_l.id,
    case when v_before.id is not null then jsonb_build_object('rpm_limit', v_before.rpm_limit, 'tpm_limit', v_before.tpm_limit) end,
    jsonb_build_object('scope', v_l.scope, 'key_id', v_l.key_id, 'group', v_l.group_name, 'model', v_l.model,
                       'rpm_limit', v_l.rpm_limit, 'tpm_limit', v_l.tpm_limit));
  return (select to_jsonb(a) from admin.model_limits a where a.id = v_l.id);
end
$$;

comment on function admin.model_limit_set(jsonb) is
  E'Creates or changes a per-model limit: {"key_id" | "group" (one), "model", "rpm_limit", "tpm_limit"} (null or absent: no limit of that kind; at least one). Refusals are 429 model_rate_limited. Returns it as admin.model_limits shows it.';

-- admin.model_limit_clear: removes a model limit, by {"id"} or by {"key_id" | "group", "model"}.
create or replace function admin.model_limit_clear(p_args jsonb)
returns boolean
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_t record;
  v_l private.model_limits;
begin
  perform private.args_check(p_args, array['id', 'key_id', 'group', 'model'], 'admin.model_limit_clear');
  if p_args ? 'id' then
    delete from private.model_limits l where l.id = private.arg_int(p_args, 'id', 1, 9223372036854775807) returning * into v_l;
  else
    select * into v_t from private.limit_target(p_args, 'admin.model_limit_clear', array['key', 'group']);
    delete from private.model_limits l
     where l.scope = v_t.scope and l.key_id is not distinct from v_t.key_id and l.group_name is not distinct from v_t.group_name
       and l.model = nullif(btrim(p_args ->> 'model'), '')   -- (as model_limit_set reads it; not checked: a model gone since can be cleared)
    returning * into v_l;
  end if;
  if v_l.id is null then
    return false;
  end if;
  perform private.audit('model_limits:' || v_l.id, jsonb_build_object('scope', v_l.scope, 'key_id', v_l.key_id,
    'group', v_l.group_name, 'model', v_l.model, 'rpm_limit', v_l.rpm_limit, 'tpm_limit', v_l.tpm_limit), null);
  return true;
end
$$;

comment on function admin.model_limit_clear(jsonb) is
  E'Removes a per-model limit: {"id"}, or {"key_id" | "group", "model"}. Returns whether one was removed.';
