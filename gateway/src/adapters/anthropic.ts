// Outbound adapter for Anthropic's Messages API (POST {base}/v1/messages, x-api-key,
// anthropic-version): OpenAI chat requests become Messages requests, and Messages answers (JSON or
// SSE events) become OpenAI chat completions or chunks, tool calls and usage included.
import {
  contentText,
  parseDataUrl,
  safeJson,
  parseEvent,
  MALFORMED_EVENT,
  usageOf,
  type ChatChunk,
  type ChatCompletion,
  type ChatRequest,
  type ChunkDecoder,
} from './types';
import { REASONING_BUDGET } from '../inbound/responses';

export const ANTHROPIC_VERSION = '2023-06-01';
/** The smallest thinking budget the Messages API accepts. */
const MIN_THINKING_BUDGET = 1024;

const stopToFinish: Record<string, string> = {
  end_turn: 'stop',
  stop_sequence: 'stop',
  pause_turn: 'stop',
  max_tokens: 'length',
  model_context_window_exceeded: 'length',
  tool_use: 'tool_calls',
  refusal: 'content_filter',
};
export const anthropicStopToFinish = (s: string | null | undefined) => (s ? stopToFinish[s] ?? 'stop' : null);

function imageBlock(url: string): Record<string, any> {
  const d = parseDataUrl(url);
  return d ? { type: 'image', source: { type: 'base64', media_type: d.mediaType, data: d.data } } : { type: 'image', source: { type: 'url', url } };
}

function userBlocks(content: unknown): any[] {
  if (typeof content === 'string') return [{ type: 'text', text: content }];
  if (!Array.isArray(content)) return [];
  return content.flatMap((p: any) => {
    if (p?.type === 'text') return [{ type: 'text', text: p.text ?? '' }];
    if (p?.type === 'image_url') return [imageBlock(typeof p.image_url === 'string' ? p.image_url : p.image_url?.url ?? '')];
    return [];
  });
}

/** OpenAI chat request → Anthropic Messages request. */
export function chatToAnthropic(req: ChatRequest, upstreamModel: string, defaultMaxTokens: number): Record<string, any> {
  const system: string[] = [];
  const messages: { role: 'user' | 'assistant'; content: any[] }[] = [];
  const push = (role: 'user' | 'assistant', blocks: any[]) => {
    if (blocks.length === 0) return;
    const last = messages.at(-1);
    // The Messages API wants user and assistant turns to alternate: merge neighbours.
    if (last && last.role === role) last.content.push(...blocks);
    else messages.push({ role, content: blocks });
  };
  for (const m of req.messages) {
    if (m.role === 'system' || m.role === 'developer') {
      system.push(contentText(m.content));
    } else if (m.role === 'user') {
      push('user', userBlocks(m.content));
    } else if (m.role === 'assistant') {
      const blocks: any[] = [];
      // A signed thinking block this channel type returned earlier goes back as it was.
      if (m.reasoning_signature && typeof m.reasoning_content === 'string') {
        blocks.push({ type: 'thinking', thinking: m.reasoning_content, signature: m.reasoning_signature });
      }
      const text = contentText(m.content);
      if (text) blocks.push({ type: 'text', text });
      for (const t of m.tool_calls ?? []) {
        blocks.push({ type: 'tool_use', id: t.id, name: t.function?.name, input: safeJson(t.function?.arguments ?? '') });
      }
      push('assistant', blocks);
    } else if (m.role === 'tool') {
      push('user', [{ type: 'tool_result', tool_use_id: m.tool_call_id, content: contentText(m.content) }]);
    }
  }
  const out: Record<string, any> = {
    model: upstreamModel,
    messages,
    max_tokens: req.max_completion_tokens ?? req.max_tokens ?? defaultMaxTokens,
  };
  /* why not inside a tool-use loop without a signature: with thinking on, Anthropic wants the
     assistant turn that called the tools to start with its signed thinking block. A conversation
     converted from another protocol carries it only when the client sent back the signature it
     got (reasoning_signature); otherwise that turn is answered without extended thinking. */
  const caller = [...req.messages].reverse().find((m: any) => m.role === 'assistant');
  const unsignedLoop = req.messages.at(-1)?.role === 'tool' && !caller?.reasoning_signature;
  const budget = unsignedLoop ? 0 : REASONING_BUDGET.get(req.reasoning_effort) ?? 0;
  if (budget > 0) {
    // Extended thinking: its budget counts against max_tokens and must stay below it.
    const asked = req.max_completion_tokens ?? req.max_tokens;
    const thinking = asked == null ? budget : Math.min(budget, asked - 1);
    if (asked == null) out.max_tokens = defaultMaxTokens + budget;
    if (thinking >= MIN_THINKING_BUDGET) out.thinking = { type: 'enabled', budget_tokens: thinking };
  }
  if (system.length > 0) out.system = system.join('\n\n');
  if (req.temperature != null) out.temperature = Math.min(req.temperature, 1);
  if (req.top_p != null) out.top_p = req.top_p;
  if (req.stop != null) out.stop_sequences = Array.isArray(req.stop) ? req.stop : [req.stop];
  if (req.user) out.metadata = { user_id: String(req.user) };
  if (Array.isArray(req.tools) && req.tools.length > 0) {
    out.tools = req.tools
      .filter((t: any) => t?.type === 'function')
      .map((t: any) => ({
        name: t.function.name,
        ...(t.function.description ? { description: t.function.description } : {}),
        input_schema: t.function.parameters ?? { type: 'object', properties: {} },
      }));
    const tc = req.tool_choice;
    let choice: Record<string, any> | null = null;
    if (tc === 'required') choice = { type: 'any' };
    else if (tc === 'none') choice = { type: 'none' };
    else if (tc && typeof tc === 'object' && tc.function?.name) choice = { type: 'tool', name: tc.function.name };
    else if (tc === 'auto' || req.parallel_tool_calls === false) choice = { type: 'auto' };
    if (choice && req.parallel_tool_calls === false && choice.type !== 'none') choice.disable_parallel_tool_use = true;
    if (choice) out.tool_choice = choice;
  }
  if (req.stream) out.stream = true;
  return out;
}

function anthropicUsage(u: any) {
  const input = (u?.input_tokens ?? 0) + (u?.cache_read_input_tokens ?? 0) + (u?.cache_creation_input_tokens ?? 0);
  return usageOf(input, u?.output_tokens ?? 0, u?.cache_read_input_tokens ?? 0, u?.cache_creation_input_tokens ?? 0);
}

/** Anthropic Messages response → OpenAI chat completion. */
export function anthropicToChat(msg: any, clientModel: string): ChatCompletion {
  let text = '';
  const toolCalls: any[] = [];
  let reasoning = '';
  const signatures: string[] = [];
  for (const b of msg?.content ?? []) {
    if (b.type === 'text') text += b.text ?? '';
    else if (b.type === 'thinking') {
      reasoning += b.thinking ?? '';
      signatures.push(b.signature ?? '');
    }
    else if (b.type === 'tool_use') {
      toolCalls.push({ id: b.id, type: 'function', function: { name: b.name, arguments: JSON.stringify(b.input ?? {}) } });
    }
  }
  const message: Record<string, any> = { role: 'assistant', content: text || (toolCalls.length ? null : ''), refusal: null };
  if (reasoning) message.reasoning_content = reasoning;
  // One signed thinking block can go back to Anthropic later (several joined could not).
  if (signatures.length === 1 && signatures[0]) message.reasoning_signature = signatures[0];
  if (toolCalls.length > 0) message.tool_calls = toolCalls;
  return {
    id: `chatcmpl-${msg?.id ?? 'anthropic'}`,
    object: 'chat.completion',
    created: Math.floor(Date.now() / 1000),
    model: clientModel,
    choices: [{ index: 0, message, finish_reason: anthropicStopToFinish(msg?.stop_reason) ?? 'stop', logprobs: null }],
    usage: anthropicUsage(msg?.usage),
  };
}

/** Anthropic SSE events → OpenAI chat chunks. */
export function anthropicChunkDecoder(clientModel: string): ChunkDecoder {
  let id = 'chatcmpl-anthropic';
  const created = Math.floor(Date.now() / 1000);
  let usageIn: any = {};
  let outputTokens = 0;
  let finish: string | null = null;
  let done = false;
  let failure: string | null = null;
  // Anthropic numbers content blocks; OpenAI numbers tool calls. Map one to the other.
  const toolIndex = new Map<number, number>();
  const chunk = (delta: Record<string, any>, finishReason: string | null = null): ChatChunk => ({
    id,
    object: 'chat.completion.chunk',
    created,
    model: clientModel,
    choices: [{ index: 0, delta, finish_reason: finishReason, logprobs: null }],
  });
  return {
    event(_name, data) {
      const ev = parseEvent(data);
      if (!ev) {
        failure ??= MALFORMED_EVENT;
        return [];
      }
      switch (ev.type) {
        case 'message_start':
          id = `chatcmpl-${ev.message?.id ?? 'anthropic'}`;
          usageIn = ev.message?.usage ?? {};
          outputTokens = ev.message?.usage?.output_tokens ?? 0;
          return [chunk({ role: 'assistant', content: '' })];
        case 'content_block_start': {
          const b = ev.content_block ?? {};
          if (b.type === 'tool_use') {
            const i = toolIndex.size;
            toolIndex.set(ev.index, i);
            return [chunk({ tool_calls: [{ index: i, id: b.id, type: 'function', function: { name: b.name, arguments: '' } }] })];
          }
          if (b.type === 'text' && b.text) return [chunk({ content: b.text })];
          return [];
        }
        case 'content_block_delta': {
          const d = ev.delta ?? {};
          if (d.type === 'text_delta') return [chunk({ content: d.text ?? '' })];
          if (d.type === 'thinking_delta') return [chunk({ reasoning_content: d.thinking ?? '' })];
          if (d.type === 'signature_delta') return [chunk({ reasoning_signature: d.signature ?? '' })];
          if (d.type === 'input_json_delta') {
            const i = toolIndex.get(ev.index) ?? 0;
            return [chunk({ tool_calls: [{ index: i, function: { arguments: d.partial_json ?? '' } }] })];
          }
          return [];
        }
        case 'message_delta':
          finish = anthropicStopToFinish(ev.delta?.stop_reason) ?? finish;
          if (ev.usage?.output_tokens != null) outputTokens = ev.usage.output_tokens;
          for (const k of ['input_tokens', 'cache_read_input_tokens', 'cache_creation_input_tokens']) {
            if (ev.usage?.[k] != null) usageIn = { ...usageIn, [k]: ev.usage[k] };
          }
          return [];
        case 'message_stop':
          done = true;
          return [
            chunk({}, finish ?? 'stop'),
            { id, object: 'chat.completion.chunk', created, model: clientModel, choices: [], usage: anthropicUsage({ ...usageIn, output_tokens: outputTokens }) },
          ];
        case 'error':
          failure = `${ev.error?.type ?? 'error'}: ${ev.error?.message ?? 'upstream error'}`;
          return [];
        default:
          return []; // ping and future event types
      }
    },
    end: () => [],
    complete: () => done,
    terminated: () => done,
    error: () => failure,
  };
}
