--! Previous: sha1:5c62744711eee552da09facd68e28bd0930bdc34
--! Hash: sha1:3cbeccd76d8d28d02ba7cfddd321eafffd56921a
--! Message: semantic cache: entries, audits, switches, request cache columns

-- Semantic cache: entries (exact hash, context hash, embedding), per-key and per-model switches,
-- the request's cache result, and the false-hit audit.

create table private.cache_entries (
  id            bigint generated always as identity primary key,
  created_at    timestamptz not null default now(),
  expires_at    timestamptz not null,
  scope         text not null check (scope <> ''),   -- 'user:<id>' or 'group:<name>', never empty
  model         text not null,
  exact_hash    bytea not null check (length(exact_hash) = 32),
  context_hash  bytea not null check (length(context_hash) = 32),
  prompt        text not null,                       -- the last user message
  embedding     halfvec,                             -- null: exact layer only
  answer        jsonb not null,                      -- {content, tool_calls, finish_reason}
  usage         jsonb not null,                      -- what the upstream reported for it
  request_id    uuid not null
);
create index cache_entries_exact_idx on private.cache_entries (scope, model, exact_hash);
create index cache_entries_context_idx on private.cache_entries (scope, model, context_hash);
create index cache_entries_expires_idx on private.cache_entries (expires_at);

create table private.cache_audits (
  id             bigint generated always as identity primary key,
  created_at     timestamptz not null default now(),
  request_id     uuid not null,
  entry_id       bigint,
  model          text not null,
  similarity     real not null,      -- prompt similarity that produced the hit
  threshold      real not null,      -- SemanticCacheThreshold at the time
  agreement      real,               -- similarity of the cached and the fresh answer
  agree          boolean,
  error          text
);
create index cache_audits_model_idx on private.cache_audits (model, created_at);

alter table private.requests add column cache text check (cache in ('miss', 'exact', 'semantic', 'bypass'));
alter table private.requests add column cache_similarity real;
alter table private.requests add column cache_entry_id bigint;
alter table private.requests add column embedding_tokens integer;

alter table private.ledger add column cache text;
alter table private.ledger add column embedding_tokens integer not null default 0;
alter table private.ledger add column embedding_micros bigint not null default 0;

alter table private.api_keys add column cache_enabled boolean not null default true;
alter table private.models add column cache_enabled boolean not null default true;

alter table private.cache_entries enable row level security;
alter table private.cache_audits  enable row level security;

-- relay_begin gains the cache request; the old signature goes.
drop function if exists gateway.relay_begin(uuid, bytea, text, text, boolean, inet, integer, integer);
drop type if exists gateway.relay_ticket;
