// Inbound OpenAI Responses API (POST /v1/responses). A channel that implements Responses itself
// (config.responses_api, see adapters/index.ts) gets the request as it is; every other channel gets
// it converted to a chat request, and the chat answer (JSON or chunks) converted back to a Response
// object or the Responses event sequence. What cannot be converted faithfully (state stored
// upstream, built-in tools, content a chat request cannot carry) is refused naming the field.
import { contentText, syntheticId, type ChatChunk, type ChatCompletion, type ChatRequest } from '../adapters/types';

/** Why a request cannot be converted, and the request field that says so. */
export interface Unconvertible {
  message: string;
  param: string;
}

const CHANNEL = 'this channel converts /v1/responses to chat completions';
/** Request fields that refer to state only an upstream implementing Responses holds. */
const STATEFUL = ['previous_response_id', 'conversation', 'prompt', 'background', 'max_tool_calls', 'top_logprobs'];
const TEXT_PARTS = new Set(['input_text', 'output_text', 'text']);

const refuse = (param: string, why: string): Unconvertible => ({ message: `'${param}' cannot be served: ${why} (${CHANNEL}).`, param });

function contentProblem(content: unknown, at: string): Unconvertible | null {
  if (typeof content === 'string' || content == null) return null;
  if (!Array.isArray(content)) return refuse(`${at}.content`, 'expected a string or an array of content parts');
  for (const [j, p] of content.entries()) {
    if (TEXT_PARTS.has(p?.type) || p?.type === 'refusal') continue;
    if (p?.type === 'input_image' && typeof p.image_url === 'string') continue;
    const why = p?.type === 'input_image' ? 'an image given by file_id refers to a file stored upstream' : `a "${p?.type}" content part has no chat completions equivalent`;
    return refuse(`${at}.content[${j}]`, why);
  }
  return null;
}

function itemProblem(item: any, i: number): Unconvertible | null {
  const at = `input[${i}]`;
  const type = item?.type ?? (item?.role ? 'message' : undefined);
  if (type === 'message') {
    if (!['user', 'assistant', 'system', 'developer'].includes(item.role)) return refuse(`${at}.role`, `the role "${item.role}" is unknown`);
    return contentProblem(item.content, at);
  }
  if (type === 'function_call') return null;
  if (type === 'function_call_output') {
    if (typeof item.output === 'string' || (Array.isArray(item.output) && item.output.every((p: any) => TEXT_PARTS.has(p?.type)))) return null;
    return refuse(`${at}.output`, 'a tool output other than text has no chat completions equivalent');
  }
  // Earlier reasoning is the model's own; a chat upstream has no field to take it back in.
  if (type === 'reasoning') return null;
  if (type === 'item_reference') return refuse(at, 'an item_reference refers to an item stored upstream');
  return refuse(`${at}.type`, `the input item type "${type}" has no chat completions equivalent`);
}

/** Why this request cannot be converted for an upstream of this wire format, or null. */
export function responsesUnconvertible(body: Record<string, any>, wire: 'openai' | 'anthropic' | 'gemini'): Unconvertible | null {
  for (const f of STATEFUL) {
    if (body[f] != null && body[f] !== false && body[f] !== 0) return refuse(f, 'it needs an upstream that implements the Responses API itself');
  }
  for (const [i, t] of (Array.isArray(body.tools) ? body.tools : []).entries()) {
    if (t?.type !== 'function') return refuse(`tools[${i}]`, `the built-in tool "${t?.type}" runs inside an upstream that implements the Responses API`);
  }
  const tc = body.tool_choice;
  if (tc && typeof tc === 'object' && tc.type !== 'function') return refuse('tool_choice', `a tool_choice of type "${tc.type}" has no chat completions equivalent`);
  if (Array.isArray(body.input)) {
    for (const [i, item] of body.input.entries()) {
      const p = itemProblem(item, i);
      if (p) return p;
    }
  } else if (body.input != null && typeof body.input !== 'string') {
    return refuse('input', 'expected a string or an array of input items');
  }
  const format = body.text?.format?.type;
  if (wire === 'anthropic' && (format === 'json_schema' || format === 'json_object')) {
    return refuse('text.format', 'an anthropic channel has no structured output mode to carry it');
  }
  const verbosity = body.text?.verbosity;
  if (wire !== 'openai' && verbosity != null && verbosity !== 'medium') return refuse('text.verbosity', `a ${wire} channel has no verbosity setting`);
  const effort = body.reasoning?.effort;
  if (wire !== 'openai' && effort != null && !REASONING_BUDGET.has(effort)) return refuse('reasoning.effort', `"${effort}" is not a known effort`);
  if (wire === 'anthropic' && effort != null && effort !== 'none' && effort !== 'minimal' && (body.temperature != null || body.top_p != null)) {
    return refuse(body.temperature != null ? 'temperature' : 'top_p', 'Anthropic models reason (extended thinking) only with the default sampling');
  }
  return null;
}

/**
 * Thinking-token budget per reasoning effort, for upstreams that take a budget (Anthropic's
 * extended thinking, Gemini's thinkingBudget): the table Google publishes for its own OpenAI
 * compatibility layer. 0: do not reason.
 */
export const REASONING_BUDGET = new Map<string, number>([
  ['none', 0],
  ['minimal', 0],
  ['low', 1024],
  ['medium', 8192],
  ['high', 24576],
  ['xhigh', 32768],
]);

function chatContent(content: unknown): any {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  const ps = content.map((p: any) =>
    p?.type === 'input_image'
      ? { type: 'image_url', image_url: { url: p.image_url, ...(p.detail && p.detail !== 'auto' ? { detail: p.detail } : {}) } }
      : { type: 'text', text: p?.text ?? p?.refusal ?? '' },
  );
  return ps.every((p: any) => p.type === 'text') ? ps.map((p: any) => p.text).join('') : ps;
}

/**
 * A reasoning item's encrypted_content when the gateway made it from an Anthropic thinking block:
 * this prefix and the block's signature. Such an item goes back to an Anthropic channel as that
 * signed thinking block; any other encrypted_content is the issuing upstream's alone.
 */
const SIGNED_THINKING = 'elygate.anthropic-thinking.v1:';

const summaryText = (item: any) => (Array.isArray(item.summary) ? item.summary.map((p: any) => p?.text ?? '').join('') : '');

/** Input items → chat messages: consecutive function calls join the assistant turn before them. */
function chatMessages(body: Record<string, any>, wire: 'openai' | 'anthropic' | 'gemini'): any[] {
  const messages: any[] = [];
  if (body.instructions) messages.push({ role: 'system', content: String(body.instructions) });
  const input = typeof body.input === 'string' ? [{ role: 'user', content: body.input }] : Array.isArray(body.input) ? body.input : [];
  for (const item of input) {
    const type = item.type ?? 'message';
    if (type === 'function_call') {
      const call = { id: item.call_id, type: 'function', function: { name: item.name, arguments: item.arguments || '{}' } };
      const last = messages.at(-1);
      if (last?.role === 'assistant') (last.tool_calls ??= []).push(call);
      else messages.push({ role: 'assistant', content: null, tool_calls: [call] });
    } else if (type === 'function_call_output') {
      messages.push({ role: 'tool', tool_call_id: item.call_id, content: typeof item.output === 'string' ? item.output : contentText(item.output) });
    } else if (type === 'reasoning') {
      const sealed = typeof item.encrypted_content === 'string' && item.encrypted_content.startsWith(SIGNED_THINKING);
      if (wire === 'anthropic' && sealed) {
        const signature = item.encrypted_content.slice(SIGNED_THINKING.length);
        messages.push({ role: 'assistant', content: null, reasoning_content: summaryText(item), reasoning_signature: signature });
      }
    } else if (type === 'message') {
      // OpenAI-compatible upstreams do not all know the developer role; it means what system means.
      const role = item.role === 'developer' ? 'system' : item.role;
      const content = role === 'assistant' ? contentText(chatContent(item.content)) : chatContent(item.content);
      const last = messages.at(-1);
      // The text that follows a turn's reasoning is the same turn.
      if (role === 'assistant' && last?.role === 'assistant' && last.content == null && !last.tool_calls) last.content = content;
      else messages.push({ role, content });
    }
  }
  return messages;
}

/**
 * Responses request → OpenAI chat request for an upstream of this wire format (check
 * responsesUnconvertible first). Earlier reasoning is kept only for an Anthropic upstream, and
 * only the thinking it signed itself.
 */
export function responsesToChat(body: Record<string, any>, wire: 'openai' | 'anthropic' | 'gemini' = 'openai'): ChatRequest {
  const chat: ChatRequest = { model: body.model, messages: chatMessages(body, wire) };
  if (body.max_output_tokens != null) chat.max_tokens = body.max_output_tokens;
  if (body.temperature != null) chat.temperature = body.temperature;
  if (body.top_p != null) chat.top_p = body.top_p;
  if (body.user ?? body.safety_identifier) chat.user = String(body.user ?? body.safety_identifier);
  if (body.parallel_tool_calls != null) chat.parallel_tool_calls = body.parallel_tool_calls;
  if (body.reasoning?.effort != null) chat.reasoning_effort = body.reasoning.effort;
  if (body.text?.verbosity != null) chat.verbosity = body.text.verbosity;
  if (body.prompt_cache_key != null) chat.prompt_cache_key = body.prompt_cache_key;
  const format = body.text?.format;
  if (format?.type === 'json_object') chat.response_format = { type: 'json_object' };
  if (format?.type === 'json_schema') {
    const { type: _t, ...schema } = format;
    chat.response_format = { type: 'json_schema', json_schema: schema };
  }
  const tools = (body.tools ?? []).filter((t: any) => t?.type === 'function');
  if (tools.length > 0) {
    chat.tools = tools.map((t: any) => ({
      type: 'function',
      function: {
        name: t.name,
        ...(t.description ? { description: t.description } : {}),
        parameters: t.parameters ?? { type: 'object', properties: {} },
        ...(t.strict != null ? { strict: t.strict } : {}),
      },
    }));
  }
  const tc = body.tool_choice;
  if (tc === 'required' || tc === 'none' || tc === 'auto') chat.tool_choice = tc;
  else if (tc?.type === 'function' && tc.name) chat.tool_choice = { type: 'function', function: { name: tc.name } };
  return chat;
}

/** A Responses usage object from a chat usage object. */
function responseUsage(u: any) {
  const input = u?.prompt_tokens ?? 0;
  const output = u?.completion_tokens ?? 0;
  return {
    input_tokens: input,
    input_tokens_details: { cached_tokens: u?.prompt_tokens_details?.cached_tokens ?? 0 },
    output_tokens: output,
    output_tokens_details: { reasoning_tokens: u?.completion_tokens_details?.reasoning_tokens ?? 0 },
    total_tokens: input + output,
  };
}

/** The Response object's fields that echo the request. */
function responseShell(id: string, createdAt: number, clientModel: string, body: Record<string, any>) {
  return {
    id,
    object: 'response',
    created_at: createdAt,
    status: 'in_progress',
    background: false,
    error: null,
    incomplete_details: null as null | { reason: string },
    instructions: body.instructions ?? null,
    max_output_tokens: body.max_output_tokens ?? null,
    metadata: body.metadata ?? {},
    model: clientModel,
    output: [] as any[],
    parallel_tool_calls: body.parallel_tool_calls ?? true,
    previous_response_id: null,
    reasoning: body.reasoning ? { effort: body.reasoning.effort ?? null, summary: body.reasoning.summary ?? null } : null,
    store: false,
    temperature: body.temperature ?? null,
    text: { format: body.text?.format ?? { type: 'text' }, ...(body.text?.verbosity ? { verbosity: body.text.verbosity } : {}) },
    tool_choice: body.tool_choice ?? 'auto',
    tools: body.tools ?? [],
    top_p: body.top_p ?? null,
    truncation: 'disabled',
    usage: null as any,
    user: body.user ?? null,
  };
}

/** A finish reason that cut the answer short: the Response is then incomplete, with this reason. */
const INCOMPLETE: Record<string, string> = { length: 'max_output_tokens', content_filter: 'content_filter' };

const textPart = (text: string) => ({ type: 'output_text', text, annotations: [], logprobs: [] });
const reasoningItem = (id: string, text: string, signature?: string) => ({
  type: 'reasoning',
  id,
  summary: text ? [{ type: 'summary_text', text }] : [],
  ...(signature ? { encrypted_content: SIGNED_THINKING + signature } : {}),
});

/** OpenAI chat completion → Response object. */
export function chatToResponse(c: ChatCompletion, clientModel: string, body: Record<string, any>): Record<string, any> {
  const choice = c.choices?.[0] ?? {};
  const msg = choice.message ?? {};
  const r = responseShell(syntheticId('resp_'), Math.floor(Date.now() / 1000), clientModel, body);
  if (typeof msg.reasoning_content === 'string' && msg.reasoning_content) {
    r.output.push(reasoningItem(syntheticId('rs_'), msg.reasoning_content, msg.reasoning_signature));
  }
  const text = contentText(msg.content);
  if (text || msg.refusal || !(msg.tool_calls?.length > 0)) {
    const content = msg.refusal && !text ? [{ type: 'refusal', refusal: String(msg.refusal) }] : [textPart(text)];
    r.output.push({ type: 'message', id: syntheticId('msg_'), status: 'completed', role: 'assistant', content });
  }
  for (const t of msg.tool_calls ?? []) {
    r.output.push({ type: 'function_call', id: syntheticId('fc_'), call_id: t.id, name: t.function?.name, arguments: t.function?.arguments || '{}', status: 'completed' });
  }
  const incomplete = INCOMPLETE[choice.finish_reason];
  r.status = incomplete ? 'incomplete' : 'completed';
  r.incomplete_details = incomplete ? { reason: incomplete } : null;
  r.usage = responseUsage(c.usage);
  return r;
}

type TextItem = { kind: 'message' | 'reasoning'; index: number; id: string; text: string; signature?: string };
type CallItem = { kind: 'call'; index: number; id: string; callId: string; name: string; args: string };
type OpenItem = TextItem | CallItem;

/**
 * OpenAI chat chunks → the Responses event sequence: response.created and .in_progress; per output
 * item output_item.added, its content events (content_part.added, output_text.delta/.done,
 * content_part.done; function_call_arguments.delta/.done; reasoning summary events) and
 * output_item.done; then response.completed (or .incomplete) with the output and usage. Every
 * event carries its sequence_number.
 */
export function responsesEncoder(clientModel: string, body: Record<string, any>): ResponsesEncoder {
  return new ResponsesEncoder(clientModel, body);
}

class ResponsesEncoder {
  private readonly r: ReturnType<typeof responseShell>;
  private seq = 0;
  private started = false;
  /** The open message or reasoning item (one at a time). */
  private current: TextItem | null = null;
  /** The open function calls, by the chat stream's tool call index. */
  private readonly calls = new Map<number, CallItem>();
  private finish: string | null = null;
  private usage: any = null;

  constructor(clientModel: string, body: Record<string, any>) {
    this.r = responseShell(syntheticId('resp_'), Math.floor(Date.now() / 1000), clientModel, body);
  }

  chunk(c: ChatChunk): string {
    let out = this.start();
    if (c.usage) this.usage = c.usage;
    for (const choice of c.choices ?? []) {
      if ((choice.index ?? 0) !== 0) continue;
      const d = choice.delta ?? {};
      if (typeof d.reasoning_content === 'string' && d.reasoning_content) {
        out += this.text('reasoning', d.reasoning_content, 'response.reasoning_summary_text.delta', { summary_index: 0 });
      }
      if (typeof d.reasoning_signature === 'string' && this.current?.kind === 'reasoning') this.current.signature = d.reasoning_signature;
      if (typeof d.content === 'string' && d.content) {
        out += this.text('message', d.content, 'response.output_text.delta', { content_index: 0, logprobs: [] });
      }
      for (const t of d.tool_calls ?? []) out += this.toolCall(t);
      if (choice.finish_reason) this.finish = choice.finish_reason;
    }
    return out;
  }

  /** The closing events; call when the upstream stream completed. */
  end(): string {
    let out = this.start() + this.closeAll();
    const incomplete = this.finish ? INCOMPLETE[this.finish] : undefined;
    this.r.status = incomplete ? 'incomplete' : 'completed';
    this.r.incomplete_details = incomplete ? { reason: incomplete } : null;
    this.r.usage = responseUsage(this.usage);
    out += this.ev(incomplete ? 'response.incomplete' : 'response.completed', { response: this.r });
    return out;
  }

  /** An in-band error event, for a stream that broke after the client got its first byte. */
  error(message: string): string {
    return this.ev('error', { code: 'upstream_stream_error', message, param: null });
  }

  private ev(type: string, data: Record<string, any>): string {
    return `event: ${type}\ndata: ${JSON.stringify({ type, sequence_number: this.seq++, ...data })}\n\n`;
  }

  private start(): string {
    if (this.started) return '';
    this.started = true;
    return this.ev('response.created', { response: this.r }) + this.ev('response.in_progress', { response: this.r });
  }

  private at(it: OpenItem) {
    return { item_id: it.id, output_index: it.index };
  }

  /** A text delta of a message or reasoning item, opening that item (and closing another) first. */
  private text(kind: TextItem['kind'], delta: string, event: string, fields: Record<string, any>): string {
    let out = '';
    if (this.current?.kind !== kind) {
      out += this.closeAll();
      this.current = { kind, index: this.r.output.length, id: syntheticId(kind === 'message' ? 'msg_' : 'rs_'), text: '' };
      out += this.open(this.current);
    }
    const it = this.current!;
    it.text += delta;
    return out + this.ev(event, { ...this.at(it), ...fields, delta });
  }

  /** A tool call chunk: its function_call item opened on first sight, then argument deltas. */
  private toolCall(t: any): string {
    let out = '';
    const i = t.index ?? 0;
    let it = this.calls.get(i);
    if (!it) {
      if (this.current) out += this.close(this.current);
      this.current = null;
      it = { kind: 'call', index: this.r.output.length, id: syntheticId('fc_'), callId: t.id ?? syntheticId('call_'), name: t.function?.name ?? '', args: '' };
      this.calls.set(i, it);
      out += this.open(it);
    }
    const delta = t.function?.arguments;
    if (!delta) return out;
    it.args += delta;
    return out + this.ev('response.function_call_arguments.delta', { ...this.at(it), delta });
  }

  private open(it: OpenItem): string {
    this.r.output.push(null); // its place; filled when the item is done
    if (it.kind === 'call') {
      const item = { type: 'function_call', id: it.id, call_id: it.callId, name: it.name, arguments: '', status: 'in_progress' };
      return this.ev('response.output_item.added', { output_index: it.index, item });
    }
    if (it.kind === 'message') {
      const item = { type: 'message', id: it.id, status: 'in_progress', role: 'assistant', content: [] };
      return this.ev('response.output_item.added', { output_index: it.index, item }) + this.ev('response.content_part.added', { ...this.at(it), content_index: 0, part: textPart('') });
    }
    return (
      this.ev('response.output_item.added', { output_index: it.index, item: reasoningItem(it.id, '') }) +
      this.ev('response.reasoning_summary_part.added', { ...this.at(it), summary_index: 0, part: { type: 'summary_text', text: '' } })
    );
  }

  private close(it: OpenItem): string {
    let item: Record<string, any>;
    let out = '';
    if (it.kind === 'call') {
      const args = it.args || '{}';
      item = { type: 'function_call', id: it.id, call_id: it.callId, name: it.name, arguments: args, status: 'completed' };
      out += this.ev('response.function_call_arguments.done', { ...this.at(it), name: it.name, arguments: args });
    } else if (it.kind === 'message') {
      item = { type: 'message', id: it.id, status: 'completed', role: 'assistant', content: [textPart(it.text)] };
      out += this.ev('response.output_text.done', { ...this.at(it), content_index: 0, text: it.text, logprobs: [] });
      out += this.ev('response.content_part.done', { ...this.at(it), content_index: 0, part: textPart(it.text) });
    } else {
      item = reasoningItem(it.id, it.text, it.signature);
      out += this.ev('response.reasoning_summary_text.done', { ...this.at(it), summary_index: 0, text: it.text });
      out += this.ev('response.reasoning_summary_part.done', { ...this.at(it), summary_index: 0, part: { type: 'summary_text', text: it.text } });
    }
    this.r.output[it.index] = item;
    return out + this.ev('response.output_item.done', { output_index: it.index, item });
  }

  private closeAll(): string {
    let out = this.current ? this.close(this.current) : '';
    this.current = null;
    for (const c of this.calls.values()) out += this.close(c);
    this.calls.clear();
    return out;
  }
}
