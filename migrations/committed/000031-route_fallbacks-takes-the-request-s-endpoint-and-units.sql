--! Previous: sha1:b30c71a1d0dc55ed874c2dc817517da439299563
--! Hash: sha1:c93519ec5243a78e4984e1f117adef0e7030254b
--! Message: route_fallbacks takes the request's endpoint and units

-- private.route_fallbacks takes the request's endpoint and units (sql/40_routing.sql), so that a
-- fallback priced only by a media unit is listed; the old signature goes, as sql/ creates the new one.
drop function if exists private.route_fallbacks(jsonb, private.api_keys, text, text, private.route_choice, text[]);
