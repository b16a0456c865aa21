-- Routing: which channels may serve a request, and in what order.

-- private.route_plan: the ordered candidates for a model and group (called by relay_begin).
create or replace function private.route_plan(p_model text, p_group text,
                                              out served integer, out candidates jsonb, out skipped jsonb)
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
  /* why: the route plan is decided here, not in the gateway, so every instance routes alike.
     Candidates go by priority tier (higher first); inside a tier by weighted random order
     (Efraimidis-Spirakis: ascending -ln(U)/weight), so a channel with twice the weight is picked
     first twice as often. Weight 0 channels are a last resort inside their tier. */
  select count(*)::integer,
         jsonb_agg(jsonb_build_object('channel_id', c.id, 'version', c.version,
                                      'model', coalesce(c.model_mapping ->> p_model, p_model))
                   order by c.priority desc, (c.weight = 0), -ln(1.0 - random()) / greatest(c.weight, 1))
           filter (where c.status = 'enabled'),
         coalesce(jsonb_agg(jsonb_build_object('channel_id', c.id, 'reason', c.status))
                    filter (where c.status <> 'enabled'), '[]'::jsonb)
    from private.channels c
   where p_model = any(c.models) and p_group = any(c.groups)
$$;
comment on function private.route_plan(text, text) is
  E'Channels serving p_model for p_group: how many, the enabled ones in try order (priority tiers, weighted random inside a tier) and the skipped ones with the reason.';
