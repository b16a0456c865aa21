// Outbound adapter for Google Gemini (POST {base}/v1beta/models/{model}:generateContent, or
// :streamGenerateContent?alt=sse; key in x-goog-api-key): OpenAI chat requests become
// generateContent requests, and GenerateContentResponse objects (JSON, or one per SSE event)
// become OpenAI chat completions or chunks, function calls and usageMetadata included.
import {
  contentText,
  parseDataUrl,
  safeJson,
  parseEvent,
  MALFORMED_EVENT,
  syntheticId,
  usageOf,
  type ChatChunk,
  type ChatCompletion,
  type ChatRequest,
  type ChunkDecoder,
} from './types';
import { REASONING_BUDGET } from '../inbound/responses';

const REFUSALS = new Set(['SAFETY', 'RECITATION', 'BLOCKLIST', 'PROHIBITED_CONTENT', 'SPII', 'IMAGE_SAFETY', 'LANGUAGE']);

function finishOf(reason: string | undefined, sawTool: boolean): string | null {
  if (!reason || reason === 'FINISH_REASON_UNSPECIFIED') return null;
  if (reason === 'MAX_TOKENS') return 'length';
  if (REFUSALS.has(reason)) return 'content_filter';
  return sawTool ? 'tool_calls' : 'stop';
}

function parts(content: unknown): any[] {
  if (typeof content === 'string') return content ? [{ text: content }] : [];
  if (!Array.isArray(content)) return [];
  return content.flatMap((p: any): any[] => {
    if (p?.type === 'text') return [{ text: p.text ?? '' }];
    if (p?.type === 'image_url') {
      const url = typeof p.image_url === 'string' ? p.image_url : p.image_url?.url ?? '';
      const d = parseDataUrl(url);
      return [d ? { inlineData: { mimeType: d.mediaType, data: d.data } } : { fileData: { fileUri: url } }];
    }
    return [];
  });
}

/** Gemini accepts an OpenAPI subset for function parameters: drop what it refuses. */
function schema(s: any): any {
  if (Array.isArray(s)) return s.map(schema);
  if (!s || typeof s !== 'object') return s;
  const out: Record<string, any> = {};
  for (const [k, v] of Object.entries(s)) {
    if (k === '$schema' || k === 'additionalProperties' || k === 'strict') continue;
    out[k] = schema(v);
  }
  return out;
}

/** OpenAI chat request → Gemini generateContent request (the model goes in the URL). */
export function chatToGemini(req: ChatRequest): Record<string, any> {
  const system: string[] = [];
  const contents: { role: 'user' | 'model'; parts: any[] }[] = [];
  // Gemini names a function result by the function's name, OpenAI by the call's id.
  const callNames = new Map<string, string>();
  const push = (role: 'user' | 'model', ps: any[]) => {
    if (ps.length === 0) return;
    const last = contents.at(-1);
    if (last && last.role === role) last.parts.push(...ps);
    else contents.push({ role, parts: ps });
  };
  for (const m of req.messages) {
    if (m.role === 'system' || m.role === 'developer') system.push(contentText(m.content));
    else if (m.role === 'user') push('user', parts(m.content));
    else if (m.role === 'assistant') {
      const ps = parts(typeof m.content === 'string' ? m.content : contentText(m.content));
      for (const t of m.tool_calls ?? []) {
        callNames.set(t.id, t.function?.name);
        ps.push({ functionCall: { name: t.function?.name, args: safeJson(t.function?.arguments ?? '') } });
      }
      push('model', ps);
    } else if (m.role === 'tool') {
      const text = contentText(m.content);
      const parsed = safeJson(text);
      const response = parsed && typeof parsed === 'object' && !Array.isArray(parsed) && Object.keys(parsed).length > 0 ? parsed : { result: text };
      push('user', [{ functionResponse: { name: callNames.get(m.tool_call_id) ?? m.name ?? 'tool', response } }]);
    }
  }
  const out: Record<string, any> = { contents };
  if (system.length > 0) out.systemInstruction = { parts: [{ text: system.join('\n\n') }] };
  const gen: Record<string, any> = {};
  if (req.temperature != null) gen.temperature = req.temperature;
  if (req.top_p != null) gen.topP = req.top_p;
  const max = req.max_completion_tokens ?? req.max_tokens;
  if (max != null) gen.maxOutputTokens = max;
  if (req.stop != null) gen.stopSequences = Array.isArray(req.stop) ? req.stop : [req.stop];
  if (req.n != null) gen.candidateCount = req.n;
  if (req.seed != null) gen.seed = req.seed;
  const budget = REASONING_BUDGET.get(req.reasoning_effort);
  if (budget != null) gen.thinkingConfig = { thinkingBudget: budget };
  if (req.response_format?.type === 'json_object') gen.responseMimeType = 'application/json';
  if (req.response_format?.type === 'json_schema') {
    gen.responseMimeType = 'application/json';
    if (req.response_format.json_schema?.schema) gen.responseSchema = schema(req.response_format.json_schema.schema);
  }
  if (Object.keys(gen).length > 0) out.generationConfig = gen;
  if (Array.isArray(req.tools) && req.tools.length > 0) {
    out.tools = [
      {
        functionDeclarations: req.tools
          .filter((t: any) => t?.type === 'function')
          .map((t: any) => ({
            name: t.function.name,
            ...(t.function.description ? { description: t.function.description } : {}),
            ...(t.function.parameters ? { parameters: schema(t.function.parameters) } : {}),
          })),
      },
    ];
    const tc = req.tool_choice;
    if (tc === 'required') out.toolConfig = { functionCallingConfig: { mode: 'ANY' } };
    else if (tc === 'none') out.toolConfig = { functionCallingConfig: { mode: 'NONE' } };
    else if (tc && typeof tc === 'object' && tc.function?.name) {
      out.toolConfig = { functionCallingConfig: { mode: 'ANY', allowedFunctionNames: [tc.function.name] } };
    }
  }
  return out;
}

function geminiUsage(u: any) {
  if (!u) return null;
  const prompt = u.promptTokenCount ?? 0;
  // Thinking tokens are billed as output.
  const completion = (u.candidatesTokenCount ?? 0) + (u.thoughtsTokenCount ?? 0);
  return usageOf(prompt, completion, u.cachedContentTokenCount ?? 0);
}

function candidateMessage(c: any, toolIds: () => string) {
  let text = '';
  const toolCalls: any[] = [];
  for (const p of c?.content?.parts ?? []) {
    if (typeof p.text === 'string' && !p.thought) text += p.text;
    if (p.functionCall) {
      toolCalls.push({ id: p.functionCall.id ?? toolIds(), type: 'function', function: { name: p.functionCall.name, arguments: JSON.stringify(p.functionCall.args ?? {}) } });
    }
  }
  return { text, toolCalls };
}

/** Gemini GenerateContentResponse → OpenAI chat completion. */
export function geminiToChat(resp: any, clientModel: string): ChatCompletion {
  const blocked = resp?.promptFeedback?.blockReason;
  const choices = (resp?.candidates ?? []).map((c: any, i: number) => {
    const { text, toolCalls } = candidateMessage(c, () => syntheticId('call_'));
    const message: Record<string, any> = { role: 'assistant', content: text || (toolCalls.length ? null : ''), refusal: null };
    if (toolCalls.length > 0) message.tool_calls = toolCalls;
    return { index: c.index ?? i, message, finish_reason: finishOf(c.finishReason, toolCalls.length > 0) ?? 'stop', logprobs: null };
  });
  if (choices.length === 0) {
    choices.push({ index: 0, message: { role: 'assistant', content: '', refusal: blocked ? `blocked: ${blocked}` : null }, finish_reason: blocked ? 'content_filter' : 'stop', logprobs: null });
  }
  return {
    id: `chatcmpl-${resp?.responseId ?? syntheticId('gemini')}`,
    object: 'chat.completion',
    created: Math.floor(Date.now() / 1000),
    model: clientModel,
    choices,
    usage: geminiUsage(resp?.usageMetadata) ?? usageOf(0, 0),
  };
}

/** Gemini SSE (one GenerateContentResponse per event, no terminator) → OpenAI chat chunks. */
export function geminiChunkDecoder(clientModel: string): ChunkDecoder {
  const id = `chatcmpl-${syntheticId('gemini')}`;
  const created = Math.floor(Date.now() / 1000);
  let started = false;
  let usage: ReturnType<typeof geminiUsage> = null;
  let finished = false;
  let failure: string | null = null;
  const toolCount = new Map<number, number>();
  const chunk = (index: number, delta: Record<string, any>, finish: string | null = null): ChatChunk => ({
    id,
    object: 'chat.completion.chunk',
    created,
    model: clientModel,
    choices: [{ index, delta, finish_reason: finish, logprobs: null }],
  });
  return {
    event(_name, data) {
      const resp = parseEvent(data) as Record<string, any> | null;
      if (!resp) {
        failure ??= MALFORMED_EVENT;
        return [];
      }
      if (resp.error) {
        failure = `${resp.error.status ?? resp.error.code ?? 'error'}: ${resp.error.message ?? 'upstream error'}`;
        return [];
      }
      const out: ChatChunk[] = [];
      if (!started) {
        started = true;
        out.push(chunk(0, { role: 'assistant', content: '' }));
      }
      usage = geminiUsage(resp.usageMetadata) ?? usage;
      if (resp.promptFeedback?.blockReason && !(resp.candidates?.length > 0)) {
        finished = true;
        out.push(chunk(0, {}, 'content_filter'));
      }
      for (const c of resp.candidates ?? []) {
        const index = c.index ?? 0;
        for (const p of c.content?.parts ?? []) {
          if (typeof p.text === 'string' && p.text && !p.thought) out.push(chunk(index, { content: p.text }));
          if (p.functionCall) {
            const n = toolCount.get(index) ?? 0;
            toolCount.set(index, n + 1);
            out.push(
              chunk(index, {
                tool_calls: [{ index: n, id: p.functionCall.id ?? syntheticId('call_'), type: 'function', function: { name: p.functionCall.name, arguments: JSON.stringify(p.functionCall.args ?? {}) } }],
              }),
            );
          }
        }
        const f = finishOf(c.finishReason, (toolCount.get(index) ?? 0) > 0);
        if (f) {
          finished = true;
          out.push(chunk(index, {}, f));
        }
      }
      return out;
    },
    end() {
      // Gemini has no end-of-stream event: its last chunk carries the full usage.
      return finished ? [{ id, object: 'chat.completion.chunk', created, model: clientModel, choices: [], usage: usage ?? usageOf(0, 0) }] : [];
    },
    complete: () => finished,
    terminated: () => false,
    error: () => failure,
  };
}
