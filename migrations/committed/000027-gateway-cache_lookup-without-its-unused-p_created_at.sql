--! Previous: sha1:7c513600c7d3a2473a858e7e4dc746a7935ade6d
--! Hash: sha1:1504f1e19d1955c7f7869c9f8b74f1dfea28edf3
--! Message: gateway.cache_lookup without its unused p_created_at

-- gateway.cache_lookup lost its unused p_created_at (issue 18). A gateway of the previous release
-- still calling the four-argument form gets an error there, which it treats as a semantic-cache
-- bypass (the request is served from the upstream), until it is restarted on this release.
drop function if exists gateway.cache_lookup(uuid, timestamptz, bytea, text);
