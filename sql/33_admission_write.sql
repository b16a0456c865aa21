-- Admission, part 3: the writing half, shared by the single and the batched call: reservations on
-- wallets, key counters (concurrency, rate windows), budgets and model limits (sql/36_budgets.sql), the admission rows, and refusals as values
-- (private.refusal_json) or raised (private.refusal_raise).

-- private.admit_write: the writing half of admission, for one request or a batch (see
-- private.admit_prepare). gateway.relay_begin calls it with one plan, gateway.relay_begin_batch
-- with the batch's; it is the only code that reserves on wallets, counts keys and records
-- admissions. Returns one refusal per plan (null: admitted; the whole array null: none refused),
-- as private.refusal_json makes them: QUOTA (wallet or key quota), RLIMT (concurrency, RPM), TLIMT,
-- BUDGT (a budget) and MRLIM (a per-model RPM/TPM; both sql/36_budgets.sql).
-- A plan whose request_id is null (refused by the reading half) is skipped.
create or replace function private.admit_write(p_plans private.admit_plan[])
returns jsonb[]
language plpgsql volatile
as $$
declare
  v_now timestamptz := private.admission_now();
  v_minute timestamptz := date_trunc('minute', v_now);
  v_window numeric;   -- share of the previous minute still in the window (set when a key is counted)
  -- per owner and per key: what this call adds (ids in order), and each key's limits
  v_need_users bigint[];
  v_need_amounts bigint[];
  v_need_keys bigint[];
  v_key_n integer[];
  v_key_amounts bigint[];
  v_key_tokens bigint[];
  v_quota bigint[];
  v_concurrency integer[];
  v_rpm integer[];
  v_tpm integer[];
  -- per budget and per model limit (sql/36_budgets.sql): what this call adds
  v_need_budgets bigint[]; v_budget_amounts bigint[];
  v_need_limits bigint[]; v_limit_n integer[]; v_limit_tokens bigint[];
  v_fits boolean := true;
  v_fit boolean;   -- one owner's or key's row, as its UPDATE returned it
  v_rows integer;
  v_keys_fit boolean := true;
  v_limits_fit boolean := true;
  -- when something does not fit: the budgets and limits as they were (private.limits_state)
  v_bids bigint[]; v_bleft bigint[]; v_lids bigint[]; v_lreq numeric[]; v_ltok numeric[];
  v_refused private.admit_plan[];
  -- when something does not fit: per owner, balance - reserved + credit as it was before this call
  v_users bigint[];
  v_avail bigint[];
  -- ... and per key, its counters as they were
  v_keys bigint[];
  v_used bigint[];
  v_kres bigint[];
  v_inflight integer[];
  v_mreq integer[];
  v_mtok bigint[];
  v_preq integer[];
  v_ptok bigint[];
  -- what the refused requests take back, per owner and per key
  v_user_undo bigint[];
  v_key_undo_n integer[];
  v_key_undo_amount bigint[];
  v_key_undo_tokens bigint[];
  v_errors jsonb[];
  v_error jsonb;
  v_retry integer;
  v_p private.admit_plan;
  u integer;
  k integer;
begin
  /* The owners whose wallets and the keys whose counters this call writes, in id order (a
     batch's from one aggregate statement; one request's read off its plan, a statement less for
     the call most admissions are). why the explicit locks for a batch: an UPDATE locks rows in
     whatever order its plan reads them (a bitmap scan reads them in heap order). Every wallet of
     a batch, then every key, in id order, as settlement takes them, or the two deadlock. One
     request locks one wallet, then one key, in that order anyway. */
  if cardinality(p_plans) > 1 then
    select u.ids, u.amounts, k.ids, k.n, k.amounts, k.tokens, k.quotas, k.concurrencies, k.rpms, k.tpms,
           b.ids, b.amounts, l.ids, l.n, l.tokens
      into v_need_users, v_need_amounts, v_need_keys, v_key_n, v_key_amounts, v_key_tokens,
           v_quota, v_concurrency, v_rpm, v_tpm, v_need_budgets, v_budget_amounts, v_need_limits, v_limit_n, v_limit_tokens
      from (select array_agg(s.user_id order by s.user_id) as ids, array_agg(s.amount order by s.user_id) as amounts
              from (select p.user_id, sum(p.reserved_micros)::bigint as amount
                      from unnest(p_plans) p where p.request_id is not null and p.reserved_micros > 0
                     group by p.user_id) s) u,
           (select array_agg(s.key_id order by s.key_id) as ids, array_agg(s.n order by s.key_id) as n,
                   array_agg(s.amount order by s.key_id) as amounts, array_agg(s.tokens order by s.key_id) as tokens,
                   array_agg(s.quota order by s.key_id) as quotas, array_agg(s.concurrency order by s.key_id) as concurrencies,
                   array_agg(s.rpm order by s.key_id) as rpms, array_agg(s.tpm order by s.key_id) as tpms
              from (select p.key_id, count(*)::integer as n, sum(p.reserved_micros)::bigint as amount,
                           sum(p.reserved_tokens)::bigint as tokens, min(p.quota_micros) as quota,
                           min(p.concurrency_limit) as concurrency, min(p.rpm_limit) as rpm, min(p.tpm_limit) as tpm
                      from unnest(p_plans) p where p.request_id is not null and p.counted
                     group by p.key_id) s) k,
           (select array_agg(s.id order by s.id) as ids, array_agg(s.amount order by s.id) as amounts
              from (select i.id, sum(p.reserved_micros)::bigint as amount
                      from unnest(p_plans) p cross join unnest(p.budget_ids) i(id)
                     where p.request_id is not null group by i.id) s) b,
           (select array_agg(s.id order by s.id) as ids, array_agg(s.n order by s.id) as n,
                   array_agg(s.tokens order by s.id) as tokens
              from (select i.id, count(*)::integer as n, sum(p.reserved_tokens)::bigint as tokens
                      from unnest(p_plans) p cross join unnest(p.limit_ids) i(id)
                     where p.request_id is not null group by i.id) s) l;
  else
    v_p := p_plans[1];
    if v_p.request_id is not null and v_p.reserved_micros > 0 then
      v_need_users := array[v_p.user_id];
      v_need_amounts := array[v_p.reserved_micros];
    end if;
    if v_p.request_id is not null and v_p.counted then
      v_need_keys := array[v_p.key_id];
      v_key_n := array[1];
      v_key_amounts := array[v_p.reserved_micros];
      v_key_tokens := array[v_p.reserved_tokens];
      v_quota := array[v_p.quota_micros];
      v_concurrency := array[v_p.concurrency_limit];
      v_rpm := array[v_p.rpm_limit];
      v_tpm := array[v_p.tpm_limit];
    end if;
    if v_p.request_id is not null and v_p.budget_ids is not null then
      v_need_budgets := v_p.budget_ids;
      v_budget_amounts := array_fill(v_p.reserved_micros, array[cardinality(v_p.budget_ids)]);
    end if;
    if v_p.request_id is not null and v_p.limit_ids is not null then
      v_need_limits := v_p.limit_ids;
      v_limit_n := array_fill(1, array[cardinality(v_p.limit_ids)]);
      v_limit_tokens := array_fill(v_p.reserved_tokens::bigint, array[cardinality(v_p.limit_ids)]);
    end if;
  end if;

  /* why sums, written unconditionally, then checked: the requests of one owner (or key) update its
     row once per call, not once each (a chain of row versions that every next update walked), and
     a call that refuses nothing (nearly all) costs one statement per table. Every count only grows,
     so the sums fit exactly when every request would in turn. When one does not fit, the requests
     are decided one by one, in order, from the row as it was (the row less the sums; the rows stay
     locked), exactly as if each had been admitted alone, and what the refused ones added is taken
     back. No subtransaction: a refusal is a value, not an undone write.
     why each UPDATE reads its row's sum with array_position rather than joining the arrays: the
     plan is then an index scan of the rows and nothing else, the same statement for one request
     (most calls: an index update of one row) and for a batch (one statement per table, whatever
     its owners and keys); the join cost the single call about a tenth more in executor start-up
     (docs/performance.md, finding 55). A missing row is not returned, and its requests are
     refused below. */
  if v_need_users is not null then
    if cardinality(v_need_users) > 1 then
      perform 1 from private.wallets w where w.user_id = any(v_need_users) order by w.user_id for no key update;
    end if;
    v_rows := 0;
    for v_fit in
      update private.wallets w
         set reserved_micros = w.reserved_micros + v_need_amounts[array_position(v_need_users, w.user_id)]
       where w.user_id = any(v_need_users)
      returning w.balance_micros - w.reserved_micros + w.credit_limit_micros >= 0
    loop
      v_fits := v_fits and v_fit;
      v_rows := v_rows + 1;
    end loop;
    v_fits := v_fits and v_rows = cardinality(v_need_users);
  end if;

  -- Key quota, concurrency, RPM and TPM (only for keys that have them).
  /* why: RPM/TPM are a sliding window over this minute's counts and the previous minute's, kept
     on the key's counters row and rolled over by this same UPDATE, so a limited key costs one
     contended row write per call. The row's minute never goes back: a transaction that started
     in the previous minute but updates after one of the new minute counts into the new one
     (settlement relies on rate_minute being the latest). */
  if v_need_keys is not null then
    v_window := 1 - extract(epoch from v_now - v_minute) / 60;
    if cardinality(v_need_keys) > 1 then
      perform 1 from private.key_counters k where k.key_id = any(v_need_keys) order by k.key_id for no key update;
    end if;
    v_rows := 0;
    for v_fit in
      update private.key_counters k
         set reserved_micros = k.reserved_micros + v_key_amounts[array_position(v_need_keys, k.key_id)],
             inflight = k.inflight + v_key_n[array_position(v_need_keys, k.key_id)],
             prev_requests = case when k.rate_minute >= v_minute then k.prev_requests
                                  when k.rate_minute = v_minute - interval '1 minute' then k.minute_requests else 0 end,
             prev_tokens = case when k.rate_minute >= v_minute then k.prev_tokens
                                when k.rate_minute = v_minute - interval '1 minute' then k.minute_tokens else 0 end,
             minute_requests = case when k.rate_minute >= v_minute then k.minute_requests else 0 end
                               + v_key_n[array_position(v_need_keys, k.key_id)],
             minute_tokens = case when k.rate_minute >= v_minute then k.minute_tokens else 0 end
                             + v_key_tokens[array_position(v_need_keys, k.key_id)],
             rate_minute = greatest(k.rate_minute, v_minute)
       where k.key_id = any(v_need_keys)
      returning (v_quota[array_position(v_need_keys, k.key_id)] is null
                 or k.used_micros + k.reserved_micros <= v_quota[array_position(v_need_keys, k.key_id)])
            and (v_concurrency[array_position(v_need_keys, k.key_id)] is null
                 or k.inflight <= v_concurrency[array_position(v_need_keys, k.key_id)])
            and (v_rpm[array_position(v_need_keys, k.key_id)] is null
                 or k.minute_requests + k.prev_requests * v_window <= v_rpm[array_position(v_need_keys, k.key_id)])
            and (v_tpm[array_position(v_need_keys, k.key_id)] is null
                 or k.minute_tokens + k.prev_tokens * v_window <= v_tpm[array_position(v_need_keys, k.key_id)])
    loop
      v_keys_fit := v_keys_fit and v_fit;
      v_rows := v_rows + 1;
    end loop;
    v_keys_fit := v_keys_fit and v_rows = cardinality(v_need_keys);
  end if;

  -- Budgets and model limits (only for requests some apply to), after the wallets and keys.
  if v_need_budgets is not null or v_need_limits is not null then
    v_limits_fit := private.limits_count(v_need_budgets, v_budget_amounts, v_need_limits, v_limit_n, v_limit_tokens, v_now);
  end if;

  if not (v_fits and v_keys_fit and v_limits_fit) then
    -- The rows as they were before this call's sums: each was updated above (so it is locked), less
    -- what was added. (The rollover of the rate window stays: it depends on the clock alone.) A
    -- row that is missing is not here, and the requests that need it are refused below.
    select array_agg(w.user_id), array_agg(w.balance_micros - w.reserved_micros + w.credit_limit_micros + x.amount),
           array_agg(0::bigint)
      into v_users, v_avail, v_user_undo
      from unnest(v_need_users, v_need_amounts) x(user_id, amount)
      join private.wallets w on w.user_id = x.user_id;
    select array_agg(k.key_id), array_agg(k.used_micros), array_agg(k.reserved_micros - x.amount), array_agg(k.inflight - x.n),
           array_agg(k.minute_requests - x.n), array_agg(k.minute_tokens - x.tokens), array_agg(k.prev_requests),
           array_agg(k.prev_tokens), array_agg(0), array_agg(0::bigint), array_agg(0::bigint)
      into v_keys, v_used, v_kres, v_inflight, v_mreq, v_mtok, v_preq, v_ptok, v_key_undo_n, v_key_undo_amount, v_key_undo_tokens
      from unnest(v_need_keys, v_key_n, v_key_amounts, v_key_tokens) x(key_id, n, amount, tokens)
      join private.key_counters k on k.key_id = x.key_id;
    if v_need_budgets is not null or v_need_limits is not null then
      select * into v_bids, v_bleft, v_lids, v_lreq, v_ltok
        from private.limits_state(v_need_budgets, v_budget_amounts, v_need_limits, v_limit_n, v_limit_tokens, v_now);
    end if;
    v_retry := greatest(ceil(60 - extract(epoch from v_now - v_minute))::integer, 1);
    v_errors := array_fill(null::jsonb, array[cardinality(p_plans)]);
    for i in 1 .. cardinality(p_plans) loop
      v_p := p_plans[i];
      continue when v_p.request_id is null;
      v_error := null;
      u := case when v_p.reserved_micros > 0 then array_position(v_users, v_p.user_id) end;
      k := case when v_p.counted then array_position(v_keys, v_p.key_id) end;
      -- Wallet: balance minus open reservations (plus the credit limit) must cover it.
      if v_p.reserved_micros > 0 and coalesce(v_avail[u], 0) < 0 then
        /* A wallet already past its credit limit: a settled bill outgrew its reservation
           (ReservationPolicy allow, or a prompt larger than its estimate). Nothing is admitted
           for it until it is covered again. */
        v_error := private.refusal_json('QUOTA',
          format('This account is %s micro-USD past its credit limit: a request was billed more than was reserved for it (one without max_tokens, under ReservationPolicy allow). No request is admitted until the wallet is topped up by at least that much.',
                 -v_avail[u]),
          null, 'Top up with admin.wallet_credit(...) or a redemption code; send max_tokens to be billed no more than you reserve.', null, null, null);
      elsif v_p.reserved_micros > 0 and coalesce(v_avail[u], 0) < v_p.reserved_micros then
        v_error := private.refusal_json('QUOTA',
          format('You exceeded your current quota: this request needs up to %s micro-USD and %s is available. Top up, lower max_tokens, or ask your operator.',
                 v_p.reserved_micros, coalesce(v_avail[u], 0)),
          null, 'Top up with admin.wallet_credit(...) or a redemption code.', null, null, null);
      elsif v_p.counted and k is null then
        v_error := private.refusal_json('QUOTA', 'This API key has no counters.', null, null, null, null, null);
      elsif v_p.counted and v_p.concurrency_limit is not null and v_inflight[k] >= v_p.concurrency_limit then
        -- reason concurrency: the gateway may settle answered requests of this key and ask again.
        v_error := private.refusal_json('RLIMT',
          format('Rate limit reached: this key allows %s concurrent requests and %s are in flight.', v_p.concurrency_limit, v_inflight[k]),
          null, null, null, 'concurrency', 1);
      elsif v_p.counted and v_p.quota_micros is not null and v_used[k] + v_kres[k] + v_p.reserved_micros > v_p.quota_micros then
        v_error := private.refusal_json('QUOTA',
          format('This API key''s quota of %s micro-USD is used up (%s spent, %s reserved).', v_p.quota_micros, v_used[k], v_kres[k]),
          null, 'Raise the key''s quota_micros, or use another key.', null, null, null);
      elsif v_p.counted and v_p.rpm_limit is not null and v_mreq[k] + 1 + v_preq[k] * v_window > v_p.rpm_limit then
        v_error := private.refusal_json('RLIMT',
          format('Rate limit reached for requests: this key allows %s requests per minute.', v_p.rpm_limit),
          null, null, null, 'rpm', v_retry);
      elsif v_p.counted and v_p.tpm_limit is not null and v_mtok[k] + v_p.reserved_tokens + v_ptok[k] * v_window > v_p.tpm_limit then
        v_error := private.refusal_json('TLIMT',
          format('Rate limit reached for tokens: this key allows %s tokens per minute, and this request may use %s.',
                 v_p.tpm_limit, v_p.reserved_tokens),
          null, null, null, 'tpm', v_retry);
      elsif v_p.budget_ids is not null or v_p.limit_ids is not null then
        select * into v_bleft, v_lreq, v_ltok, v_error
          from private.limits_admit(v_p, v_now, v_bids, v_bleft, v_lids, v_lreq, v_ltok);
      end if;
      if v_error is null then
        if u is not null then
          v_avail[u] := v_avail[u] - v_p.reserved_micros;
        end if;
        if k is not null then
          v_kres[k] := v_kres[k] + v_p.reserved_micros;
          v_inflight[k] := v_inflight[k] + 1;
          v_mreq[k] := v_mreq[k] + 1;
          v_mtok[k] := v_mtok[k] + v_p.reserved_tokens;
        end if;
      else
        v_errors[i] := v_error;
        p_plans[i] := null;
        if v_p.budget_ids is not null or v_p.limit_ids is not null then
          v_refused := array_append(v_refused, v_p);
        end if;
        if u is not null then
          v_user_undo[u] := v_user_undo[u] + v_p.reserved_micros;
        end if;
        if k is not null then
          v_key_undo_n[k] := v_key_undo_n[k] + 1;
          v_key_undo_amount[k] := v_key_undo_amount[k] + v_p.reserved_micros;
          v_key_undo_tokens[k] := v_key_undo_tokens[k] + v_p.reserved_tokens;
        end if;
      end if;
    end loop;
    -- What the refused requests added comes off again (their rows are still locked).
    update private.wallets w
       set reserved_micros = w.reserved_micros - x.amount
      from unnest(v_users, v_user_undo) x(user_id, amount)
     where w.user_id = x.user_id and x.amount <> 0;
    update private.key_counters c
       set reserved_micros = c.reserved_micros - x.amount,
           inflight = c.inflight - x.n,
           minute_requests = c.minute_requests - x.n,
           minute_tokens = c.minute_tokens - x.tokens
      from unnest(v_keys, v_key_undo_n, v_key_undo_amount, v_key_undo_tokens) x(key_id, n, amount, tokens)
     where c.key_id = x.key_id and x.n <> 0;
    if v_refused is not null then
      perform private.limits_undo(v_refused);
    end if;
  end if;

  /* why a row of its own: the request log is partitioned and indexed for reading; the in-flight
     row is small, has one index, and is deleted when settlement writes the finished request. It
     keeps the price card (settlement bills with it). */
  insert into private.admissions (id, created_at, key_id, user_id, group_name, endpoint, model, stream, client_ip,
                                  prompt_tokens, route_plan, reserved_micros, reserved_tokens, counted,
                                  cache, cache_entry_id, cache_similarity,
                                  input_price, output_price, cached_input_price, cache_write_price, per_call_price,
                                  group_multiplier, hit_ratio, embedding_price, embedding_per_call, unit_price, budget_ids, limit_ids, admitted_at)
  select p.request_id, now(), p.key_id, p.user_id, p.group_name, p.endpoint, p.model, p.stream, p.client_ip,
         p.prompt_tokens, p.route_plan, p.reserved_micros, p.reserved_tokens, p.counted,
         p.cache_state, p.cache_entry_id, p.cache_similarity,
         (p.card).input, (p.card).output, (p.card).cached_input, (p.card).cache_write, (p.card).per_call,
         (p.card).group_multiplier, (p.card).hit_ratio, (p.card).embedding_input, (p.card).embedding_per_call,
         (p.card).unit_price, p.budget_ids, p.limit_ids, v_now
    from unnest(p_plans) p
   where p.request_id is not null;

  return v_errors;
end
$$;

comment on function private.admit_write(private.admit_plan[]) is
  E'The writing half of admission, for one request or a batch: reserves on wallets, counts keys (quota, concurrency, RPM, TPM), budgets and model limits once per owner, key and row, and records the admitted requests with their price card. Returns a refusal (private.refusal_json: QUOTA, RLIMT, TLIMT, BUDGT or MRLIM) per refused plan, null when none is refused; refuses exactly the requests that would be refused one at a time, in order.';

-- private.admission_durability: admission commits asynchronously unless DurableAdmission.
create or replace function private.admission_durability(p_opt jsonb)
returns boolean
language plpgsql volatile
as $$
begin
  /* why: on most disks the WAL flush is the dearest part of admission, and it is paid per request
     on the hot path. Admission commits asynchronously (unless DurableAdmission): the row locks are
     released at commit, the flush follows within wal_writer_delay, and the request's own
     relay_finish (synchronous) flushes it anyway. A crash in between loses the admission, never the
     bill: the outcome carries the ticket and private.settle re-creates a missing admission.
     Callers assign its result rather than PERFORM it: a simple expression, no executor start-up. */
  if (p_opt ->> 'DurableAdmission')::boolean then
    return true;
  end if;
  return set_config('synchronous_commit', 'off', true) is null;
end
$$;

comment on function private.admission_durability(jsonb) is
  E'Makes the admission''s transaction commit asynchronously unless the DurableAdmission option is on; returns whether it stays durable.';

-- private.refusal_json: a refusal as a value: a refused element's answer in
-- gateway.relay_begin_batch (from the reading half's raised error, or from private.admit_write),
-- shaped like the error of a single call plus what the gateway acts on: reason (concurrency, rpm,
-- tpm: which limit) and retry_after (seconds, for Retry-After). Empty fields are null.
-- (Its older form took no reason nor retry_after: the migration that added them dropped it.)
create or replace function private.refusal_json(p_code text, p_message text, p_detail text, p_hint text, p_column text,
                                                p_reason text, p_retry_after integer)
returns jsonb
language sql immutable
as $$
  select jsonb_build_object('code', p_code, 'message', p_message, 'detail', nullif(p_detail, ''),
                            'hint', nullif(p_hint, ''), 'column', nullif(p_column, ''),
                            'reason', p_reason, 'retry_after', p_retry_after)
$$;

comment on function private.refusal_json(text, text, text, text, text, text, integer) is
  E'{code, message, detail, hint, column, reason, retry_after} of a refusal, empty fields as null (gateway.relay_begin_batch, private.admit_write).';

-- private.refusal_raise: raises a refusal of private.admit_write as an error (gateway.relay_begin,
-- whose refusals are errors): its SQLSTATE, message and hint, and its reason and retry_after as a
-- JSON object in the detail, e.g. {"reason": "concurrency", "retry_after": 1}.
/* why JSON in the detail: an error has no field of its own for them, and the gateway's single
   call stays one round trip to relay_begin; the gateway reads the fields from it
   (gateway/src/admission.ts). */
create or replace function private.refusal_raise(p_error jsonb)
returns void
language plpgsql immutable
as $$
declare
  v_code text := p_error ->> 'code';
  v_message text := p_error ->> 'message';
  v_detail text := case when p_error ->> 'reason' is not null or p_error ->> 'retry_after' is not null then
                     jsonb_build_object('reason', p_error -> 'reason', 'retry_after', p_error -> 'retry_after')::text end;
begin
  -- (RAISE refuses a null option, and an empty one would reach the client as an empty field.)
  if v_detail is not null and p_error ->> 'hint' is not null then
    raise exception using errcode = v_code, message = v_message, detail = v_detail, hint = p_error ->> 'hint';
  elsif v_detail is not null then
    raise exception using errcode = v_code, message = v_message, detail = v_detail;
  elsif p_error ->> 'hint' is not null then
    raise exception using errcode = v_code, message = v_message, hint = p_error ->> 'hint';
  end if;
  raise exception using errcode = v_code, message = v_message;
end
$$;

comment on function private.refusal_raise(jsonb) is
  E'Raises a refusal made by private.admit_write as an error (gateway.relay_begin): SQLSTATE, message, hint, and {reason, retry_after} as JSON in the detail.';
