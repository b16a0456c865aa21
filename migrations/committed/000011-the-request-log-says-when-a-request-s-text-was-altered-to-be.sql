--! Previous: sha1:62097fd8e3cc4e16f7c3de730895d95dc96b32fa
--! Hash: sha1:9fa6edff25fa223b00cdcd612b2f1abca5c64a7a
--! Message: the request log says when a request's text was altered to be stored

-- Enter migration here

-- A request whose text could not be stored as it was (NUL, lone UTF-16 surrogates: the gateway
-- replaces them with U+FFFD before settlement) says so in its log row. A constant default: no
-- rewrite of the request log.
alter table private.requests add column if not exists text_altered boolean not null default false;
comment on column private.requests.text_altered is
  'Some text of this request (an answer, an error message) held characters PostgreSQL cannot store (NUL, lone surrogates); the gateway replaced them with U+FFFD.';
