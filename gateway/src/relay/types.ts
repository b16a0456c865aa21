// The shapes the request path passes between its stages: what the client asked (RelayInput), what
// admission answered (Ticket), and what each upstream try left behind (RouteAttempt).
import type { MediaEndpoint, Protocol } from '../adapters';
import type { PlanEntry } from '../snapshot';
import type { Attempt } from '../settle';
import type { PriceCard } from '../receipt';
import type { CacheRequest, CachedAnswer } from '../cache';

export type Endpoint = 'chat/completions' | 'completions' | 'embeddings' | 'messages' | 'responses' | MediaEndpoint;
export type { MediaEndpoint, Protocol };

export interface RelayInput {
  requestId: string;
  /** The protocol the client speaks; decides the shape of answers and errors. */
  protocol: Protocol;
  endpoint: Endpoint;
  keyHash: Buffer | null;
  clientIp: string | null;
  /** The parsed body (an object) and its original bytes, sent on untouched when nothing changes. */
  body: Record<string, any>;
  raw: Uint8Array<ArrayBuffer>;
  /** Fires when the client goes away. */
  clientSignal: AbortSignal;
  /** The client's request headers (cache opt-out). */
  headers: Headers;
  /** A multipart upload (audio/transcriptions): its content type, with the boundary; the file is in raw. */
  multipart?: { contentType: string; fileBytes: number; fileHead: Uint8Array };
}

/** What the gateway reads off the request before admission (no database involved). */
export interface RequestFacts {
  started: number;
  stream: boolean;
  maxTokens: number | null;
  /** The cache key of a chat request while the cache is on (SQL decides whether it is used). */
  cacheReq: CacheRequest | null;
  /** Why a chat request has no cache key (off, client, last-message); null otherwise. */
  cacheBypass: string | null;
  /** The key's hash as text: this process's handle on the key's unsettled outcomes. */
  keyRef: string | undefined;
  /** A media endpoint's units as read off the request, for admission's reservation and unit price. */
  units: MediaUnits | null;
}

/** What admission prices a media request by: how many units (images, characters, search units) and,
 *  for images, the size and quality (private.unit_price). */
export interface MediaUnits {
  count: number;
  size?: string;
  quality?: string;
}

/** A plan entry as route_plan writes it: the key to use is chosen in SQL as well; fallback: the
 *  fallback model this candidate serves (private.route_fallbacks), absent for the model asked for. */
export type RouteEntry = PlanEntry & { key_index?: number; key_ordinal?: number; fallback?: string };

/** One try, as stored in the request row's attempts (settle.ts's Attempt plus routing detail; param:
 *  the request field that made the channel skip it). */
export type RouteAttempt = Attempt & { key?: number; skipped?: boolean; mapped_from?: number; param?: string; fallback?: string };

/** relay_begin's answer. */
export interface Ticket {
  request_id: string;
  created_at: string;
  user_id: string;
  key_id: string;
  group_name: string;
  reserved_micros: string;
  plan: RouteEntry[];
  price: PriceCard | null;
  cache: CachePlan | null;
  /** The output limit the gateway sends the upstream (ReservationPolicy cap, for a request that
   *  set none); null: the request's own limit stands. */
  max_tokens: number | null;
}

/** relay_begin's cache result: an exact hit with its answer, a miss with the semantic plan, or a
 *  bypass with its reason (private.cache_eligibility). */
export interface CachePlan {
  result: 'exact' | 'miss' | 'bypass';
  reason?: string;
  entry_id?: number;
  answer?: CachedAnswer;
  usage?: CacheUsage;
  semantic?: { channel_id: number; version: number; model: string; dimensions: number } | null;
}

export interface CacheUsage {
  prompt_tokens?: number;
  completion_tokens?: number;
  cached_tokens?: number;
  cache_write_tokens?: number;
}

/** What the cache knows about a request by the time it is answered. */
export interface CacheState {
  request: CacheRequest;
  result: 'miss' | 'exact' | 'semantic' | 'bypass';
  /** Why the cache did not apply (result bypass). */
  reason: string | null;
  similarity: number | null;
  embedding: number[] | null;
  embeddingTokens: number;
}
