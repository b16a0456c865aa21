// Inbound OpenAI Responses API (POST /v1/responses). OpenAI-type channels get the request as it
// is; for other channel types a non-streamed request is converted to a chat request and the chat
// answer back to a Response object. What cannot be converted faithfully (streaming, stored
// conversation state, built-in tools) is refused with a clear error instead of being guessed at.
import { contentText, syntheticId, type ChatCompletion, type ChatRequest } from '../adapters/types';

/** Why this request cannot be served by converting it, or null when it can. */
export function responsesUnconvertible(body: Record<string, any>): string | null {
  if (body.stream === true) return 'streaming /v1/responses is only available through OpenAI-type channels';
  if (body.previous_response_id) return '"previous_response_id" needs an OpenAI-type channel (it refers to state stored upstream)';
  const builtin = (body.tools ?? []).find((t: any) => t?.type !== 'function');
  if (builtin) return `the built-in tool "${builtin.type}" needs an OpenAI-type channel`;
  return null;
}

function parts(content: unknown): any {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  const ps = content.flatMap((p: any): any[] => {
    if (p?.type === 'input_text' || p?.type === 'output_text' || p?.type === 'text') return [{ type: 'text', text: p.text ?? '' }];
    if (p?.type === 'input_image') return [{ type: 'image_url', image_url: { url: p.image_url ?? '' } }];
    return [];
  });
  return ps.every((p: any) => p.type === 'text') ? ps.map((p: any) => p.text).join('') : ps;
}

/** Responses request → OpenAI chat request. */
export function responsesToChat(body: Record<string, any>): ChatRequest {
  const messages: any[] = [];
  if (body.instructions) messages.push({ role: 'system', content: String(body.instructions) });
  const input = typeof body.input === 'string' ? [{ role: 'user', content: body.input }] : Array.isArray(body.input) ? body.input : [];
  for (const item of input) {
    if (item.type === 'function_call') {
      const call = { id: item.call_id, type: 'function', function: { name: item.name, arguments: item.arguments ?? '{}' } };
      const last = messages.at(-1);
      if (last?.role === 'assistant' && !last.content) (last.tool_calls ??= []).push(call);
      else messages.push({ role: 'assistant', content: null, tool_calls: [call] });
    } else if (item.type === 'function_call_output') {
      messages.push({ role: 'tool', tool_call_id: item.call_id, content: typeof item.output === 'string' ? item.output : JSON.stringify(item.output) });
    } else if (item.role) {
      messages.push({ role: item.role, content: parts(item.content) });
    }
  }
  const chat: ChatRequest = { model: body.model, messages };
  if (body.max_output_tokens != null) chat.max_tokens = body.max_output_tokens;
  if (body.temperature != null) chat.temperature = body.temperature;
  if (body.top_p != null) chat.top_p = body.top_p;
  if (body.user) chat.user = body.user;
  const tools = (body.tools ?? []).filter((t: any) => t?.type === 'function');
  if (tools.length > 0) {
    chat.tools = tools.map((t: any) => ({
      type: 'function',
      function: { name: t.name, ...(t.description ? { description: t.description } : {}), parameters: t.parameters ?? { type: 'object', properties: {} } },
    }));
    const tc = body.tool_choice;
    if (tc === 'required' || tc === 'none' || tc === 'auto') chat.tool_choice = tc;
    else if (tc?.type === 'function' && tc.name) chat.tool_choice = { type: 'function', function: { name: tc.name } };
  }
  return chat;
}

/** OpenAI chat completion → Response object. */
export function chatToResponse(c: ChatCompletion, clientModel: string, body: Record<string, any>): Record<string, any> {
  const choice = c.choices?.[0] ?? {};
  const msg = choice.message ?? {};
  const output: any[] = [];
  const text = contentText(msg.content);
  if (text || !(msg.tool_calls?.length > 0)) {
    output.push({
      type: 'message',
      id: syntheticId('msg_'),
      status: 'completed',
      role: 'assistant',
      content: [{ type: 'output_text', text, annotations: [] }],
    });
  }
  for (const t of msg.tool_calls ?? []) {
    output.push({ type: 'function_call', id: syntheticId('fc_'), call_id: t.id, name: t.function?.name, arguments: t.function?.arguments ?? '{}', status: 'completed' });
  }
  const u = c.usage ?? { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 };
  const incomplete = choice.finish_reason === 'length' || choice.finish_reason === 'content_filter';
  return {
    id: syntheticId('resp_'),
    object: 'response',
    created_at: Math.floor(Date.now() / 1000),
    status: incomplete ? 'incomplete' : 'completed',
    incomplete_details: incomplete ? { reason: choice.finish_reason === 'length' ? 'max_output_tokens' : 'content_filter' } : null,
    error: null,
    model: clientModel,
    output,
    instructions: body.instructions ?? null,
    max_output_tokens: body.max_output_tokens ?? null,
    parallel_tool_calls: body.parallel_tool_calls ?? true,
    temperature: body.temperature ?? null,
    top_p: body.top_p ?? null,
    tool_choice: body.tool_choice ?? 'auto',
    tools: body.tools ?? [],
    usage: {
      input_tokens: u.prompt_tokens,
      input_tokens_details: { cached_tokens: u.prompt_tokens_details?.cached_tokens ?? 0 },
      output_tokens: u.completion_tokens,
      output_tokens_details: { reasoning_tokens: 0 },
      total_tokens: u.prompt_tokens + u.completion_tokens,
    },
  };
}
