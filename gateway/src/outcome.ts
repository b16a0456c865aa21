// What an outcome says about usage: the upstream's report when there is one, else a tokenizer
// count of the prompt and of what was delivered (flagged 'estimated'), else nothing. Which of
// these is billed, and how much, is decided by private.settle (sql/35_settlement.sql).
import { countUsage, readUsage } from './usage';
import type { Outcome } from './settle';

export type UsageFields = Pick<Outcome, 'prompt_tokens' | 'completion_tokens' | 'cached_tokens' | 'cache_write_tokens' | 'usage_source' | 'abort_policy'>;

/**
 * @param reported the usage object the upstream sent (OpenAI or Anthropic field names), if any
 * @param delivered the answer text that reached the client
 * @param complete whether the answer finished (else it was cut: client gone or upstream broke)
 */
export async function usageFields(body: Record<string, any>, reported: unknown, delivered: string, complete: boolean): Promise<UsageFields> {
  const abort_policy = complete ? null : 'prompt+delivered';
  const usage = readUsage(reported);
  if (usage) {
    return {
      prompt_tokens: usage.prompt_tokens,
      completion_tokens: usage.completion_tokens,
      cached_tokens: usage.cached_tokens ?? null,
      cache_write_tokens: usage.cache_write_tokens ?? null,
      usage_source: 'upstream',
      abort_policy,
    };
  }
  if (!complete && delivered.length === 0) {
    // Nothing reached the client: nothing to bill.
    return { prompt_tokens: null, completion_tokens: null, usage_source: 'none', abort_policy: null };
  }
  const counted = await countUsage(body, delivered);
  return { prompt_tokens: counted.prompt_tokens, completion_tokens: counted.completion_tokens, usage_source: 'estimated', abort_policy };
}
