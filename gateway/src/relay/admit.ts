// The one round trip before the upstream: what the request asks for, read off its body, and the
// admission that answers with a ticket (see admission.ts for how admissions are batched).
import { admit } from '../admission';
import { isConcurrencyRefusal } from '../errors';
import { options, type Channel } from '../snapshot';
import { settleNowFor } from '../settle';
import { promptEstimate } from '../usage';
import { cacheRequest } from '../cache';
import { isMedia } from '../adapters';
import { mediaPromptEstimate, mediaUnits } from './media';
import type { RelayInput, RequestFacts, Ticket } from './types';

/* why: the bare proxy is the same process with the database switched off, so the benchmark can
   tell the database's cost from the proxy's (bench/). Never for production: nothing is checked. */
const bareUpstream = process.env.ELYGATE_BARE_PROXY === '1' ? process.env.ELYGATE_BARE_UPSTREAM ?? '' : null;
export const bareChannel: Channel | null =
  bareUpstream === null ? null : { id: 0, version: 0, name: 'bare', type: 'openai', baseUrl: bareUpstream, config: {}, keys: ['bare'] };

const integer = (v: unknown): number | null => (Number.isInteger(v) ? (v as number) : null);

export function describeRequest(input: RelayInput): RequestFacts {
  const { body } = input;
  return {
    started: performance.now(),
    stream: input.endpoint !== 'embeddings' && !isMedia(input.endpoint) && body.stream === true,
    maxTokens: integer(body.max_completion_tokens) ?? integer(body.max_tokens) ?? integer(body.max_output_tokens),
    ...cacheKeyOf(input),
    keyRef: input.keyHash ? input.keyHash.toString('hex') : undefined,
    units: mediaUnits(input),
  };
}

/** The cache key of a chat request (SQL decides whether it is used), or why there is none. */
function cacheKeyOf(input: RelayInput): Pick<RequestFacts, 'cacheReq' | 'cacheBypass'> {
  if (input.protocol !== 'openai' || input.endpoint !== 'chat/completions') return { cacheReq: null, cacheBypass: null };
  // The cache key costs a canonical serialisation and two hashes of the body: skip it when the
  // cache is off altogether.
  if (options.SemanticCacheEnabled === false) return { cacheReq: null, cacheBypass: 'off' };
  const req = cacheRequest(input.body, input.headers);
  return 'bypass' in req ? { cacheReq: null, cacheBypass: req.bypass } : { cacheReq: req, cacheBypass: null };
}

/** Admits the request (or refuses it, by throwing the database's refusal). */
export async function admitRequest(input: RelayInput, facts: RequestFacts): Promise<Ticket> {
  if (bareChannel) {
    return { request_id: input.requestId, created_at: '', plan: [{ channel_id: 0, version: 0, model: input.body.model }], price: null, cache: null } as unknown as Ticket;
  }
  const admitThis = () =>
    admit<Ticket>({
      id: input.requestId,
      keyHash: input.keyHash,
      model: input.body.model,
      endpoint: input.endpoint,
      stream: facts.stream,
      clientIp: input.clientIp,
      promptTokens: isMedia(input.endpoint) ? mediaPromptEstimate(input) : promptEstimate(input.body),
      maxTokens: facts.maxTokens,
      cache: facts.cacheReq
        ? { exact: facts.cacheReq.exact, context: facts.cacheReq.context, semantic: facts.cacheReq.semantic, sampling: facts.cacheReq.sampling }
        : null,
      units: facts.units,
    });
  try {
    return await admitThis();
  } catch (err) {
    /* why: a key's concurrency_limit counts a request until it is settled, up to
       SettleIntervalMs after its answer. A client that waits for each answer before it sends
       the next would otherwise be refused in between. If this process still holds answered
       requests of the key, settle them now and ask once more. */
    if (!(facts.keyRef && isConcurrencyRefusal(err) && (await settleNowFor(facts.keyRef)))) throw err;
    return admitThis();
  }
}
