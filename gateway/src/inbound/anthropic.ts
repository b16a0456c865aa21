// Inbound Anthropic Messages protocol (POST /v1/messages), so the Anthropic SDK and Claude Code work
// against any channel: a Messages request becomes an OpenAI chat request, and chat answers (JSON or
// chunks) become Messages answers and SSE events. Errors use Anthropic's shape. Extended thinking
// maps to a reasoning effort and back to thinking blocks; earlier thinking blocks are the model's
// own and stay behind (a chat request has no field for them). What a chat request cannot carry
// (documents, server tools, MCP servers, top_k, non-text tool results) is refused naming it.
import { contentText, finishToAnthropic, safeJson, syntheticId, type ChatChunk, type ChatCompletion, type ChatRequest } from '../adapters/types';
import type { Unconvertible } from './responses';

/** Anthropic's error type for an HTTP status. */
export function anthropicErrorType(status: number): string {
  if (status === 400 || status === 422) return 'invalid_request_error';
  if (status === 401) return 'authentication_error';
  if (status === 402) return 'billing_error';
  if (status === 403) return 'permission_error';
  if (status === 404) return 'not_found_error';
  if (status === 413) return 'request_too_large';
  if (status === 429) return 'rate_limit_error';
  if (status === 504) return 'timeout_error';
  if (status === 529 || status === 503) return 'overloaded_error';
  return 'api_error';
}

export function anthropicError(status: number, message: string): { type: 'error'; error: { type: string; message: string } } {
  return { type: 'error', error: { type: anthropicErrorType(status), message } };
}

function blocksText(content: unknown): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  return content.map((b: any) => (b?.type === 'text' ? b.text ?? '' : '')).join('');
}

function imagePart(b: any): any {
  const s = b.source ?? {};
  const url = s.type === 'base64' ? `data:${s.media_type};base64,${s.data}` : s.url ?? '';
  return { type: 'image_url', image_url: { url } };
}

/** Content blocks a chat request carries (text, images, tool calls and results); thinking is the model's own. */
const CONVERTIBLE_BLOCKS = new Set(['text', 'image', 'tool_use', 'tool_result', 'thinking', 'redacted_thinking']);

const refuse = (param: string, why: string): Unconvertible => ({
  message: `${param}: ${why}; this channel converts /v1/messages to chat completions, and cannot serve it.`,
  param,
});

function blockProblem(b: any, at: string): Unconvertible | null {
  if (!CONVERTIBLE_BLOCKS.has(b?.type)) return refuse(`${at}.type`, `a "${b?.type}" block has no chat completions equivalent`);
  if (b.type === 'tool_result' && Array.isArray(b.content)) {
    const other = b.content.findIndex((x: any) => x?.type !== 'text');
    if (other >= 0) return refuse(`${at}.content.${other}`, 'a tool result other than text has no chat completions equivalent');
  }
  return null;
}

/** Why a Messages request cannot be converted to a chat request faithfully, or null. */
export function messagesUnconvertible(body: Record<string, any>): Unconvertible | null {
  for (const [i, m] of (body.messages ?? []).entries()) {
    if (!Array.isArray(m?.content)) continue;
    for (const [j, b] of m.content.entries()) {
      const p = blockProblem(b, `messages.${i}.content.${j}`);
      if (p) return p;
    }
  }
  for (const [i, t] of (Array.isArray(body.tools) ? body.tools : []).entries()) {
    if (!t?.input_schema) return refuse(`tools.${i}`, `the server tool "${t?.type ?? t?.name}" runs inside Anthropic's API`);
  }
  if (body.mcp_servers != null) return refuse('mcp_servers', 'MCP servers are called by Anthropic\'s API');
  if (body.top_k != null) return refuse('top_k', 'chat completions has no top_k');
  const thinking = body.thinking?.type;
  if (thinking != null && thinking !== 'enabled' && thinking !== 'disabled') return refuse('thinking.type', `"${thinking}" thinking has no chat completions equivalent`);
  return null;
}

/** An extended-thinking budget as the nearest reasoning effort a chat request takes. */
function effortOf(budget: unknown): string {
  const n = Number(budget);
  return n <= 1024 ? 'low' : n <= 8192 ? 'medium' : 'high';
}

/** Anthropic Messages request → OpenAI chat request (check messagesUnconvertible first). */
export function messagesToChat(body: Record<string, any>): ChatRequest {
  const messages: any[] = [];
  const system = typeof body.system === 'string' ? body.system : blocksText(body.system);
  if (system) messages.push({ role: 'system', content: system });
  for (const m of body.messages ?? []) {
    const blocks: any[] = typeof m.content === 'string' ? [{ type: 'text', text: m.content }] : Array.isArray(m.content) ? m.content : [];
    if (m.role === 'assistant') {
      const text = blocks.filter((b) => b.type === 'text').map((b) => b.text ?? '').join('');
      const toolCalls = blocks
        .filter((b) => b.type === 'tool_use')
        .map((b) => ({ id: b.id, type: 'function', function: { name: b.name, arguments: JSON.stringify(b.input ?? {}) } }));
      messages.push({ role: 'assistant', content: text || null, ...(toolCalls.length ? { tool_calls: toolCalls } : {}) });
      continue;
    }
    // A user turn: tool results become tool messages (they must follow the assistant's calls),
    // everything else one user message after them.
    for (const b of blocks.filter((x) => x.type === 'tool_result')) {
      const text = typeof b.content === 'string' ? b.content : blocksText(b.content);
      messages.push({ role: 'tool', tool_call_id: b.tool_use_id, content: b.is_error ? `Error: ${text}` : text });
    }
    const parts = blocks.flatMap((b) => (b.type === 'text' ? [{ type: 'text', text: b.text ?? '' }] : b.type === 'image' ? [imagePart(b)] : []));
    if (parts.length === 0) continue;
    messages.push({ role: 'user', content: parts.every((p) => p.type === 'text') ? parts.map((p) => p.text).join('') : parts });
  }
  const chat: ChatRequest = { model: body.model, messages };
  if (body.max_tokens != null) chat.max_tokens = body.max_tokens;
  if (body.temperature != null) chat.temperature = body.temperature;
  if (body.top_p != null) chat.top_p = body.top_p;
  if (Array.isArray(body.stop_sequences) && body.stop_sequences.length > 0) chat.stop = body.stop_sequences;
  if (body.metadata?.user_id) chat.user = String(body.metadata.user_id);
  if (body.stream === true) chat.stream = true;
  if (body.thinking?.type === 'enabled') chat.reasoning_effort = effortOf(body.thinking.budget_tokens);
  const tools = (body.tools ?? []).filter((t: any) => t && t.input_schema);
  if (tools.length > 0) {
    chat.tools = tools.map((t: any) => ({
      type: 'function',
      function: { name: t.name, ...(t.description ? { description: t.description } : {}), parameters: t.input_schema },
    }));
    const tc = body.tool_choice;
    if (tc?.type === 'any') chat.tool_choice = 'required';
    else if (tc?.type === 'none') chat.tool_choice = 'none';
    else if (tc?.type === 'tool') chat.tool_choice = { type: 'function', function: { name: tc.name } };
    else if (tc?.type === 'auto') chat.tool_choice = 'auto';
    if (tc?.disable_parallel_tool_use === true) chat.parallel_tool_calls = false;
  }
  return chat;
}

const stopOf = (finish: string | null | undefined) => (finish ? finishToAnthropic[finish] ?? 'end_turn' : 'end_turn');

/** Anthropic's usage from OpenAI-shaped usage: input_tokens leaves out what was read from or
 *  written to the prompt cache, as Anthropic reports it. */
function usageFromChat(u: any) {
  const cached = u?.prompt_tokens_details?.cached_tokens ?? 0;
  const written = u?.cache_creation_input_tokens ?? 0;
  return {
    input_tokens: Math.max(0, (u?.prompt_tokens ?? 0) - cached - written),
    output_tokens: u?.completion_tokens ?? 0,
    cache_creation_input_tokens: written,
    cache_read_input_tokens: cached,
  };
}

/** OpenAI chat completion → Anthropic Messages response. */
export function chatToMessage(c: ChatCompletion, clientModel: string): Record<string, any> {
  const choice = c.choices?.[0] ?? {};
  const msg = choice.message ?? {};
  const content: any[] = [];
  // Reasoning an OpenAI-compatible upstream returns (reasoning_content) is the thinking block; it
  // has no signature, as it was not Anthropic's.
  if (typeof msg.reasoning_content === 'string' && msg.reasoning_content) content.push({ type: 'thinking', thinking: msg.reasoning_content, signature: '' });
  const text = contentText(msg.content);
  if (text) content.push({ type: 'text', text });
  for (const t of msg.tool_calls ?? []) {
    content.push({ type: 'tool_use', id: t.id, name: t.function?.name, input: safeJson(t.function?.arguments ?? '') });
  }
  return {
    id: `msg_${String(c.id ?? syntheticId('')).replace(/^chatcmpl-/, '')}`,
    type: 'message',
    role: 'assistant',
    model: clientModel,
    content,
    stop_reason: stopOf(choice.finish_reason),
    stop_sequence: null,
    usage: usageFromChat(c.usage),
  };
}

const ev = (type: string, data: Record<string, any>) => `event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`;

/**
 * OpenAI chat chunks → Anthropic SSE events (message_start, content_block_start/delta/stop,
 * message_delta with the final usage, message_stop). Usage is only known at the end of an OpenAI
 * stream, so message_start reports zero and message_delta carries the totals.
 */
export function messagesEncoder(clientModel: string) {
  const id = `msg_${syntheticId('')}`;
  let started = false;
  let block: { index: number; kind: 'text' | 'thinking' | 'tool' } | null = null;
  let nextIndex = 0;
  let finish: string | null = null;
  let usage: any = null;
  const toolBlocks = new Map<number, number>();
  const start = () => {
    if (started) return '';
    started = true;
    return (
      ev('message_start', {
        message: { id, type: 'message', role: 'assistant', model: clientModel, content: [], stop_reason: null, stop_sequence: null, usage: { input_tokens: 0, output_tokens: 0 } },
      }) + ev('ping', {})
    );
  };
  const close = () => {
    if (!block) return '';
    const out = ev('content_block_stop', { index: block.index });
    block = null;
    return out;
  };
  return {
    chunk(c: ChatChunk): string {
      let out = start();
      if (c.usage) usage = c.usage;
      for (const choice of c.choices ?? []) {
        if ((choice.index ?? 0) !== 0) continue;
        const d = choice.delta ?? {};
        if (typeof d.reasoning_content === 'string' && d.reasoning_content.length > 0) {
          if (block?.kind !== 'thinking') {
            out += close();
            block = { index: nextIndex++, kind: 'thinking' };
            out += ev('content_block_start', { index: block.index, content_block: { type: 'thinking', thinking: '', signature: '' } });
          }
          out += ev('content_block_delta', { index: block.index, delta: { type: 'thinking_delta', thinking: d.reasoning_content } });
        }
        if (typeof d.content === 'string' && d.content.length > 0) {
          if (block?.kind !== 'text') {
            out += close();
            block = { index: nextIndex++, kind: 'text' };
            out += ev('content_block_start', { index: block.index, content_block: { type: 'text', text: '' } });
          }
          out += ev('content_block_delta', { index: block.index, delta: { type: 'text_delta', text: d.content } });
        }
        for (const t of d.tool_calls ?? []) {
          const i = t.index ?? 0;
          if (!toolBlocks.has(i)) {
            out += close();
            block = { index: nextIndex++, kind: 'tool' };
            toolBlocks.set(i, block.index);
            out += ev('content_block_start', {
              index: block.index,
              content_block: { type: 'tool_use', id: t.id ?? syntheticId('toolu_'), name: t.function?.name ?? '', input: {} },
            });
          }
          const args = t.function?.arguments;
          if (args) out += ev('content_block_delta', { index: toolBlocks.get(i)!, delta: { type: 'input_json_delta', partial_json: args } });
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
      return out;
    },
    /** The closing events; call when the upstream stream completed. */
    end(): string {
      let out = start() + close();
      const u = usageFromChat(usage);
      out += ev('message_delta', { delta: { stop_reason: stopOf(finish), stop_sequence: null }, usage: u });
      out += ev('message_stop', {});
      return out;
    },
    /** An in-band error event, for a stream that broke after the client got its first byte. */
    error(message: string): string {
      return ev('error', { error: { type: 'api_error', message } });
    },
  };
}
