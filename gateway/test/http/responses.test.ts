// POST /v1/responses through the real `openai` SDK: passed through to a channel that implements the
// Responses API (config.responses_api "native"), converted to chat completions, both ways and
// streaming included, for a chat-only OpenAI-compatible upstream (which answers 404 on /responses),
// an Anthropic channel and a Gemini channel; billed like any chat request; what cannot be converted
// refused with a 400 naming the field; a coding agent's recorded request replayed.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import OpenAI from 'openai';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { closeDb, createChannel, createGroup, createKey, createUser, db, unique } from '../support/db';
import { startGateway, type RunningGateway } from '../support/gateway';
import { startMockUpstream, type MockUpstream } from '../support/mock-upstream';
import { startMockAnthropic, type MockAnthropic } from '../support/mock-anthropic';
import { startMockGemini, type MockGemini } from '../support/mock-gemini';
import { responsesNative, type ChannelLike } from '../../src/adapters';

type Kind = 'native' | 'chat' | 'anthropic' | 'gemini';
let gw: RunningGateway;
let native: MockUpstream;
let chatOnly: MockUpstream;
let anthropic: MockAnthropic;
let gemini: MockGemini;
let client: OpenAI;
let key: string;
let lastRequestId = '';
const models = {} as Record<Kind, string>;

beforeAll(async () => {
  [native, chatOnly, anthropic, gemini] = await Promise.all([
    startMockUpstream(),
    startMockUpstream({ responsesApi: false }),
    startMockAnthropic(),
    startMockGemini(),
  ]);
  const sql = db();
  const group = await createGroup(sql);
  const user = await createUser(sql, { group });
  await sql`select admin.wallet_credit(${sql.json({ user_id: user.id, amount_micros: 1_000_000_000 })})`;
  key = (await createKey(sql, { user_id: user.id })).key;
  for (const k of ['native', 'chat', 'anthropic', 'gemini'] as const) {
    models[k] = unique(`resp-${k}`);
    // 1 µ$ per input token, 2 per output token: the ledger amount is checkable by hand.
    await sql`select admin.model_upsert(${sql.json({ name: models[k], input_price: 1_000_000, output_price: 2_000_000 })})`;
  }
  await createChannel(sql, { type: 'openai', base_url: native.url, models: [models.native], groups: [group], config: { responses_api: 'native' } });
  // No responses_api: a base URL other than OpenAI's own converts.
  await createChannel(sql, { type: 'openai', base_url: chatOnly.url, models: [models.chat], groups: [group] });
  await createChannel(sql, { type: 'anthropic', base_url: anthropic.url, models: [models.anthropic], groups: [group] });
  await createChannel(sql, { type: 'gemini', base_url: gemini.url, models: [models.gemini], groups: [group] });
  gw = await startGateway();
  // The SDK's own fetch, noting each answer's request id (a stream's receipt is in its ledger row).
  const noting = async (...args: Parameters<typeof fetch>) => {
    const res = await fetch(...args);
    lastRequestId = res.headers.get('x-request-id') ?? '';
    return res;
  };
  client = new OpenAI({ apiKey: key, baseURL: `${gw.url}/v1`, maxRetries: 0, fetch: noting });
});

afterAll(async () => {
  await gw?.stop();
  await Promise.all([native?.close(), chatOnly?.close(), anthropic?.close(), gemini?.close()]);
  await closeDb();
});

async function ledgerRow(requestId: string) {
  for (let i = 0; i < 250; i++) {
    const [row] = await db()`select amount_micros::int, prompt_tokens, completion_tokens, usage_source from admin.ledger where request_id = ${requestId}`;
    if (row) return row;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`request ${requestId} has no ledger row`);
}

/** The request's ledger row bills exactly the usage the client was told. */
async function expectBilled(requestId: string, usage: OpenAI.Responses.ResponseUsage | undefined) {
  expect(usage).toBeDefined();
  const row = await ledgerRow(requestId);
  expect(row).toMatchObject({ usage_source: 'upstream', prompt_tokens: usage!.input_tokens, completion_tokens: usage!.output_tokens });
  expect(row.amount_micros).toBe(usage!.input_tokens + 2 * usage!.output_tokens);
}

const weatherTool: OpenAI.Responses.FunctionTool = {
  type: 'function',
  name: 'get_weather',
  description: 'Weather for a city',
  strict: false,
  parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
};

/** The upstream call a conversion made, in the upstream's own format. */
function lastUpstreamBody(kind: Exclude<Kind, 'native'>): any {
  const mock = kind === 'chat' ? chatOnly : kind === 'anthropic' ? anthropic : gemini;
  return mock.calls.at(-1)!.body;
}

describe('/v1/responses, native', () => {
  it('reaches a channel that implements Responses as it was sent', async () => {
    const r = await client.responses.create({ model: models.native, input: 'hello', store: false });
    expect(r.object).toBe('response');
    const call = native.calls.at(-1)!;
    expect(call.path).toBe('/v1/responses');
    expect(call.body).toEqual({ model: models.native, input: 'hello', store: false });
  });

  it('passes built-in tools on to it', async () => {
    const r = await client.responses.create({ model: models.native, input: 'news?', tools: [{ type: 'web_search' }] });
    expect(r.output_text).toBe('echo: news?');
    expect(native.calls.at(-1)!.body.tools).toEqual([{ type: 'web_search' }]);
  });
});

describe('which channels take /v1/responses natively', () => {
  it('OpenAI\'s own API unless told otherwise; every other upstream converted unless told otherwise', () => {
    const ch = (type: ChannelLike['type'], baseUrl: string, config: Record<string, any> = {}): ChannelLike => ({ type, baseUrl, config });
    expect(responsesNative(ch('openai', 'https://api.openai.com'))).toBe(true);
    expect(responsesNative(ch('openai', 'https://api.openai.com/v1'))).toBe(true);
    expect(responsesNative(ch('openai', 'https://api.openai.com/v1', { responses_api: 'convert' }))).toBe(false);
    expect(responsesNative(ch('openai', 'https://api.deepseek.com'))).toBe(false);
    expect(responsesNative(ch('openai', 'http://vllm.internal:8000/v1', { responses_api: 'native' }))).toBe(true);
    expect(responsesNative(ch('azure', 'https://x.openai.azure.com'))).toBe(false);
    expect(responsesNative(ch('azure', 'https://x.openai.azure.com', { responses_api: 'native' }))).toBe(true);
    expect(responsesNative(ch('anthropic', 'https://api.anthropic.com', {}))).toBe(false);
  });
});

describe('the chat-only mock', () => {
  it('has no /v1/responses (so what works through it was converted)', async () => {
    const res = await fetch(`${chatOnly.url}/v1/responses`, { method: 'POST', headers: { authorization: 'Bearer x', 'content-type': 'application/json' }, body: '{}' });
    expect(res.status).toBe(404);
  });
});

describe.each(['chat', 'anthropic', 'gemini'] as const)('/v1/responses converted for a %s channel', (kind) => {
  it('responses.create: text, usage, the billed amount', async () => {
    const { data: r, response } = await client.responses
      .create({ model: models[kind], instructions: 'be brief', input: 'ping pong', max_output_tokens: 50, temperature: 0.2 })
      .withResponse();
    expect(r.object).toBe('response');
    expect(r.status).toBe('completed');
    expect(r.model).toBe(models[kind]);
    expect(r.output_text).toBe('echo: ping pong');
    expect(r.usage!.output_tokens).toBe(3);
    expect(r.usage!.total_tokens).toBe(r.usage!.input_tokens + 3);
    const id = response.headers.get('x-request-id')!;
    expect(Number(response.headers.get('x-elygate-cost-micros'))).toBe(r.usage!.input_tokens + 6);
    await expectBilled(id, r.usage);
    const sent = lastUpstreamBody(kind);
    if (kind === 'chat') {
      expect(chatOnly.calls.at(-1)!.path).toBe('/v1/chat/completions');
      expect(sent).toMatchObject({ messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'ping pong' }], max_tokens: 50, temperature: 0.2 });
    } else if (kind === 'anthropic') {
      expect(sent).toMatchObject({ system: 'be brief', max_tokens: 50, temperature: 0.2 });
    } else {
      expect(sent.generationConfig).toMatchObject({ maxOutputTokens: 50, temperature: 0.2 });
    }
  });

  it('responses.stream: the Responses event sequence, numbered, with usage at the end', async () => {
    const stream = client.responses.stream({ model: models[kind], input: 'one two three' });
    const events: OpenAI.Responses.ResponseStreamEvent[] = [];
    for await (const e of stream) events.push(e);
    const final = await stream.finalResponse();
    expect(final.output_text).toBe('echo: one two three');
    expect(final.status).toBe('completed');
    const types = events.map((e) => e.type);
    const deltas = types.filter((t) => t === 'response.output_text.delta').length;
    expect(deltas).toBeGreaterThanOrEqual(1);
    expect(types).toEqual([
      'response.created',
      'response.in_progress',
      'response.output_item.added',
      'response.content_part.added',
      ...Array(deltas).fill('response.output_text.delta'),
      'response.output_text.done',
      'response.content_part.done',
      'response.output_item.done',
      'response.completed',
    ]);
    expect(events.map((e) => e.sequence_number)).toEqual(events.map((_, i) => i));
    const done = events.find((e) => e.type === 'response.output_text.done') as OpenAI.Responses.ResponseTextDoneEvent;
    expect(done.text).toBe('echo: one two three');
    const completed = events.at(-1) as OpenAI.Responses.ResponseCompletedEvent;
    expect(completed.response.usage!.output_tokens).toBe(4);
    // The stream's usage is what was billed.
    await expectBilled(lastRequestId, completed.response.usage);
  });

  it('a function call: create and stream, arguments whole', async () => {
    const r = await client.responses.create({ model: models[kind], input: [{ role: 'user', content: 'weather in Paris?' }], tools: [weatherTool], tool_choice: 'auto' });
    const call = r.output.find((o) => o.type === 'function_call') as OpenAI.Responses.ResponseFunctionToolCall;
    expect(call).toMatchObject({ type: 'function_call', name: 'get_weather', status: 'completed' });
    expect(call.call_id).toBeTruthy();
    expect(JSON.parse(call.arguments)).toEqual({ city: 'Paris' });

    const stream = client.responses.stream({ model: models[kind], input: 'weather in Paris?', tools: [weatherTool] });
    const events: OpenAI.Responses.ResponseStreamEvent[] = [];
    for await (const e of stream) events.push(e);
    const final = await stream.finalResponse();
    const streamed = final.output.find((o) => o.type === 'function_call') as OpenAI.Responses.ResponseFunctionToolCall;
    expect(streamed.name).toBe('get_weather');
    expect(JSON.parse(streamed.arguments)).toEqual({ city: 'Paris' });
    const argDeltas = events.filter((e) => e.type === 'response.function_call_arguments.delta') as OpenAI.Responses.ResponseFunctionCallArgumentsDeltaEvent[];
    expect(argDeltas.map((e) => e.delta).join('')).toBe(streamed.arguments);
    const argsDone = events.find((e) => e.type === 'response.function_call_arguments.done') as OpenAI.Responses.ResponseFunctionCallArgumentsDoneEvent;
    expect(JSON.parse(argsDone.arguments)).toEqual({ city: 'Paris' });
    expect(events.at(-1)!.type).toBe('response.completed');
    expect(events.map((e) => e.sequence_number)).toEqual(events.map((_, i) => i));
  });

  it('multi-turn: the function call and its output go back in the upstream\'s own shape', async () => {
    const input: OpenAI.Responses.ResponseInput = [
      { role: 'user', content: 'weather in Paris?' },
      { type: 'function_call', call_id: 'call_w1', name: 'get_weather', arguments: '{"city":"Paris"}' },
      { type: 'function_call_output', call_id: 'call_w1', output: '{"temp":21}' },
    ];
    const r = await client.responses.create({ model: models[kind], input, tools: [weatherTool] });
    expect(r.output_text).toBe('tool said: {"temp":21}');
    const streamed = await client.responses.stream({ model: models[kind], input, tools: [weatherTool] }).finalResponse();
    expect(streamed.output_text).toBe('tool said: {"temp":21}');
    const sent = lastUpstreamBody(kind);
    if (kind === 'chat') {
      expect(sent.messages.map((m: any) => m.role)).toEqual(['user', 'assistant', 'tool']);
      expect(sent.messages[1].tool_calls).toEqual([{ id: 'call_w1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }]);
      expect(sent.messages[2]).toEqual({ role: 'tool', tool_call_id: 'call_w1', content: '{"temp":21}' });
    } else if (kind === 'anthropic') {
      expect(sent.messages.map((m: any) => m.role)).toEqual(['user', 'assistant', 'user']);
      expect(sent.messages[1].content[0]).toEqual({ type: 'tool_use', id: 'call_w1', name: 'get_weather', input: { city: 'Paris' } });
      expect(sent.messages[2].content[0]).toMatchObject({ type: 'tool_result', tool_use_id: 'call_w1', content: '{"temp":21}' });
    } else {
      expect(sent.contents.map((c: any) => c.role)).toEqual(['user', 'model', 'user']);
      expect(sent.contents[2].parts[0]).toEqual({ functionResponse: { name: 'get_weather', response: { temp: 21 } } });
    }
  });

  it('structured output and reasoning effort map to the upstream\'s own settings', async () => {
    const format = { type: 'json_schema' as const, name: 'city', schema: { type: 'object', properties: { name: { type: 'string' } } }, strict: true };
    const params = { model: models[kind], input: 'name a city', reasoning: { effort: 'high' as const } };
    if (kind === 'anthropic') {
      await client.responses.create(params);
      expect(lastUpstreamBody(kind)).toMatchObject({ thinking: { type: 'enabled', budget_tokens: 24576 }, max_tokens: 4096 + 24576 });
      return;
    }
    await client.responses.create({ ...params, text: { format } });
    const sent = lastUpstreamBody(kind);
    if (kind === 'chat') {
      expect(sent.response_format).toEqual({ type: 'json_schema', json_schema: { name: 'city', schema: format.schema, strict: true } });
      expect(sent.reasoning_effort).toBe('high');
    } else {
      expect(sent.generationConfig).toMatchObject({ responseMimeType: 'application/json', responseSchema: format.schema, thinkingConfig: { thinkingBudget: 24576 } });
    }
  });

  it('refuses what it cannot convert with a 400 naming the field', async () => {
    const cases: [Record<string, any>, string][] = [
      [{ tools: [{ type: 'web_search' }] }, 'tools[0]'],
      [{ previous_response_id: 'resp_123' }, 'previous_response_id'],
      [{ input: [{ type: 'item_reference', id: 'msg_1' }] }, 'input[0]'],
      [{ input: [{ role: 'user', content: [{ type: 'input_file', file_id: 'file_1' }] }] }, 'input[0].content[0]'],
    ];
    for (const [fields, param] of cases) {
      const e = await client.responses.create({ model: models[kind], input: 'x', ...fields } as any).catch((err) => err);
      expect(e).toBeInstanceOf(OpenAI.BadRequestError);
      expect(e.param).toBe(param);
      expect(e.code).toBe('unsupported_parameter');
      expect(e.message).toContain(`'${param}'`);
    }
    if (kind === 'anthropic') {
      const e = await client.responses
        .create({ model: models[kind], input: 'x', text: { format: { type: 'json_schema', name: 'o', schema: { type: 'object' } } } })
        .catch((err) => err);
      expect(e.param).toBe('text.format');
    }
  });
});

describe('reasoning through an Anthropic channel, over a tool-use loop', () => {
  const ask = { role: 'user' as const, content: 'weather in Paris?' };
  const reasoning = { effort: 'low' as const, summary: 'auto' as const };

  it.each([false, true])('the signed thinking comes back as a reasoning item and goes back as that thinking block (stream: %s)', async (streamed) => {
    const params = { model: models.anthropic, input: [ask], tools: [weatherTool], reasoning };
    const first = streamed ? await client.responses.stream(params).finalResponse() : await client.responses.create(params);
    expect(first.output.map((o) => o.type)).toEqual(['reasoning', 'message', 'function_call']);
    const thought = first.output[0] as OpenAI.Responses.ResponseReasoningItem;
    expect(thought.summary).toEqual([{ type: 'summary_text', text: 'Let me think about it.' }]);
    expect(thought.encrypted_content).toBe('elygate.anthropic-thinking.v1:EqQBCkYIBxgCKkBmockSignature');
    expect(anthropic.calls.at(-1)!.body.thinking).toEqual({ type: 'enabled', budget_tokens: 1024 });

    // The next turn, as a client that stores nothing sends it: the output items back, and the tool's output.
    const call = first.output[2] as OpenAI.Responses.ResponseFunctionToolCall;
    const second = await client.responses.create({
      model: models.anthropic,
      input: [ask, ...(first.output as OpenAI.Responses.ResponseInputItem[]), { type: 'function_call_output', call_id: call.call_id, output: '{"temp":21}' }],
      tools: [weatherTool],
      reasoning,
    });
    expect(second.output_text).toBe('tool said: {"temp":21}');
    const sent = anthropic.calls.at(-1)!.body;
    expect(sent.messages.map((m: any) => m.role)).toEqual(['user', 'assistant', 'user']);
    expect(sent.messages[1].content.map((b: any) => b.type)).toEqual(['thinking', 'text', 'tool_use']);
    expect(sent.messages[1].content[0]).toEqual({ type: 'thinking', thinking: 'Let me think about it.', signature: 'EqQBCkYIBxgCKkBmockSignature' });
    expect(sent.thinking).toEqual({ type: 'enabled', budget_tokens: 1024 });
  });

  it('without the signed reasoning item, the tool-use turn is answered without extended thinking', async () => {
    const input: OpenAI.Responses.ResponseInput = [
      ask,
      { type: 'function_call', call_id: 'call_w2', name: 'get_weather', arguments: '{"city":"Paris"}' },
      { type: 'function_call_output', call_id: 'call_w2', output: '{"temp":21}' },
    ];
    await client.responses.create({ model: models.anthropic, input, tools: [weatherTool], reasoning });
    const sent = anthropic.calls.at(-1)!.body;
    expect(sent.thinking).toBeUndefined();
    expect(sent.messages[1].content.map((b: any) => b.type)).toEqual(['tool_use']);
  });

  it('another upstream\'s encrypted reasoning is not sent to Anthropic, nor reasoning to a chat upstream', async () => {
    const foreign = { type: 'reasoning' as const, id: 'rs_1', summary: [{ type: 'summary_text' as const, text: 'hm' }], encrypted_content: 'gAAAAB-openai-only' };
    await client.responses.create({ model: models.anthropic, input: [foreign, ask], reasoning });
    expect(anthropic.calls.at(-1)!.body.messages).toEqual([{ role: 'user', content: [{ type: 'text', text: 'weather in Paris?' }] }]);
    const signed = { ...foreign, encrypted_content: 'elygate.anthropic-thinking.v1:sig' };
    await client.responses.create({ model: models.chat, input: [ask, signed, { role: 'assistant', content: 'sunny' }, { role: 'user', content: 'thanks' }] });
    expect(chatOnly.calls.at(-1)!.body.messages).toEqual([
      { role: 'user', content: 'weather in Paris?' },
      { role: 'assistant', content: 'sunny' },
      { role: 'user', content: 'thanks' },
    ]);
  });
});

describe('a converted stream that breaks after its first byte', () => {
  it('ends with an error event the SDK raises, and what was delivered is billed', async () => {
    const stream = client.responses.stream({ model: models.chat, input: 'one two three four five mock:break:4' });
    const deltas: string[] = [];
    stream.on('response.output_text.delta', (e) => deltas.push(e.delta));
    const err = await stream.finalResponse().catch((e) => e);
    expect(err).toBeInstanceOf(Error);
    expect(String(err.message)).toContain('Upstream stream failed');
    expect(deltas.length).toBeGreaterThan(0);
    const row = await ledgerRow(lastRequestId);
    expect(row.usage_source).toBe('estimated');
    expect(row.completion_tokens).toBeGreaterThan(0);
  });
});

describe('an upstream that reports no usage', () => {
  it('a converted request is billed from a tokenizer count of its input items and instructions', async () => {
    chatOnly.reportUsage = false;
    try {
      const words = 'alpha beta gamma delta epsilon zeta eta theta iota kappa '.repeat(20);
      const { response } = await client.responses
        .create({
          model: models.chat,
          instructions: words,
          input: [
            { role: 'user', content: [{ type: 'input_text', text: words }] },
            { type: 'function_call', call_id: 'c1', name: 'lookup', arguments: JSON.stringify({ q: words }) },
            { type: 'function_call_output', call_id: 'c1', output: words },
          ],
        })
        .withResponse();
      const row = await ledgerRow(response.headers.get('x-request-id')!);
      expect(row.usage_source).toBe('estimated');
      // Four copies of 200 words: every item and the instructions are counted.
      expect(row.prompt_tokens).toBeGreaterThan(4 * 200);
    } finally {
      chatOnly.reportUsage = true;
    }
  });
});

describe('a coding agent\'s recorded request (Codex CLI shape), replayed', () => {
  const recorded = JSON.parse(readFileSync(join(__dirname, 'fixtures', 'codex-responses-request.json'), 'utf8'));
  delete recorded['//'];

  it.each(['chat', 'anthropic'] as const)('through a %s channel: tools, reasoning, the earlier turns', async (kind) => {
    // The recorded body as it is (the SDK sends a plain object unchanged), read by the SDK's
    // stream accumulator, which checks the event sequence as it goes.
    const final = await client.responses.stream({ ...recorded, model: models[kind] }).finalResponse();
    expect(final.status).toBe('completed');
    await expectBilled(lastRequestId, final.usage);
    // The upstream's reasoning (reasoning_content; Anthropic's thinking) is a reasoning item's summary.
    expect(final.output[0]).toMatchObject({
      type: 'reasoning',
      summary: [{ type: 'summary_text', text: kind === 'chat' ? 'Thinking (medium) first.' : 'Let me think about it.' }],
    });

    const sent = lastUpstreamBody(kind);
    if (kind === 'chat') {
      expect(sent.messages.map((m: any) => m.role)).toEqual(['system', 'user', 'user', 'assistant', 'tool', 'assistant', 'tool', 'user']);
      expect(sent.messages[0].content).toBe(recorded.instructions);
      expect(sent.messages[3].tool_calls[0]).toMatchObject({ id: 'call_rg_01', function: { name: 'shell' } });
      // The assistant's text and the call that followed it are one assistant turn.
      expect(sent.messages[5]).toMatchObject({ content: recorded.input[5].content[0].text, tool_calls: [{ id: 'call_patch_02' }] });
      expect(sent.tools.map((t: any) => t.function.name)).toEqual(['shell', 'update_plan', 'apply_patch']);
      expect(sent).toMatchObject({ tool_choice: 'auto', parallel_tool_calls: false, reasoning_effort: 'medium', stream: true, prompt_cache_key: recorded.prompt_cache_key });
      expect(sent.stream_options).toEqual({ include_usage: true });
      // The chat mock calls the first tool it is offered.
      const call = final.output.find((o) => o.type === 'function_call') as OpenAI.Responses.ResponseFunctionToolCall;
      expect(call.name).toBe('shell');
    } else {
      // The last user turn carries the patch's result and the new question (one Anthropic turn);
      // the Anthropic mock answers a tool result with its text.
      expect(final.output_text).toBe(`tool said: ${recorded.input[7].output}`);
      expect(sent.messages[4].content.map((b: any) => b.type)).toEqual(['tool_result', 'text']);
      expect(sent.messages.map((m: any) => m.role)).toEqual(['user', 'assistant', 'user', 'assistant', 'user']);
      expect(sent.system).toBe(recorded.instructions);
      expect(sent.tools.map((t: any) => t.name)).toEqual(['shell', 'update_plan', 'apply_patch']);
      expect(sent.tool_choice).toEqual({ type: 'auto', disable_parallel_tool_use: true });
      // The last turn is a new user message, so the effort becomes an extended-thinking budget.
      expect(sent.thinking).toEqual({ type: 'enabled', budget_tokens: 8192 });
      expect(sent.max_tokens).toBeGreaterThan(8192);
    }
  });
});
