// The request path (DESIGN §2), top-down: admit (the one database round trip), answer from the
// cache or from the upstreams the database planned, and settle the admission exactly once.
//
//   admit.ts       what the request asks; gateway.relay_begin(_batch) through admission.ts
//   cache-hit.ts   exact and semantic hits, the false-hit audit
//   attempts.ts    the plan's channels in order, failover, the answer when all failed
//   answer.ts      a non-stream answer: checked, rendered, settled, with its receipt
//   stream.ts      a stream: checked up to its first byte, then piped (pipes.ts) and settled at its end
//   settlement.ts  the one settlement of an admission
//   refusal.ts     a refused admission: logged (a known key's) or counted (no valid key)
import { toGatewayError, type GatewayError } from '../errors';
import { admitRequest, bareChannel, describeRequest } from './admit';
import { answerFromCache, cacheStateOf } from './cache-hit';
import { relayToUpstream } from './attempts';
import { Settlement } from './settlement';
import { recordRefusal } from './refusal';
import type { RelayInput } from './types';

export type { Endpoint, Protocol, RelayInput } from './types';

export async function relay(input: RelayInput): Promise<Response> {
  const facts = describeRequest(input);
  const ticket = await admitRequest(input, facts).catch((err) => {
    if (!bareChannel) recordRefusal(input, facts, err);
    throw err;
  });
  const cache = cacheStateOf(facts, ticket);
  const settlement = new Settlement(input, facts, ticket, cache, bareChannel !== null);
  let failure: GatewayError | null = null;
  try {
    const run = { input, facts, ticket, cache, settlement };
    return (await answerFromCache(input, facts, ticket, cache, settlement)) ?? (await relayToUpstream(run));
  } catch (err) {
    failure = toGatewayError(err);
    throw failure;
  } finally {
    settlement.close(failure);
  }
}
