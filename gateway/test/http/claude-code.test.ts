// What Claude Code and other Anthropic clients need beyond POST /v1/messages's basics, through the
// real `@anthropic-ai/sdk` against an Anthropic-type channel (passed through) and an OpenAI-type
// channel (converted): anthropic-version and anthropic-beta forwarded, POST
// /v1/messages/count_tokens (exact, or an estimate said so), extended thinking and streamed tool
// input, refusals of what a chat request cannot carry, and a recorded Claude Code turn replayed.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import Anthropic from '@anthropic-ai/sdk';
import { countTokens as tokenizerCount } from 'gpt-tokenizer';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { closeDb, createChannel, createGroup, createKey, createUser, db, unique } from '../support/db';
import { startGateway, type RunningGateway } from '../support/gateway';
import { startMockUpstream, type MockUpstream } from '../support/mock-upstream';
import { startMockAnthropic, type MockAnthropic } from '../support/mock-anthropic';

type Kind = 'anthropic' | 'openai';
let gw: RunningGateway;
let openai: MockUpstream;
let anthropic: MockAnthropic;
let client: Anthropic;
let key: string;
const models = {} as Record<Kind, string>;
const channelIds = {} as Record<Kind, number>;
let lastRequestId = '';

beforeAll(async () => {
  [openai, anthropic] = await Promise.all([startMockUpstream({ responsesApi: false }), startMockAnthropic()]);
  const sql = db();
  const group = await createGroup(sql);
  const user = await createUser(sql, { group });
  await sql`select admin.wallet_credit(${sql.json({ user_id: user.id, amount_micros: 1_000_000_000 })})`;
  key = (await createKey(sql, { user_id: user.id })).key;
  for (const k of ['anthropic', 'openai'] as const) {
    models[k] = unique(`claude-${k}`);
    await sql`select admin.model_upsert(${sql.json({ name: models[k], input_price: 1_000_000, output_price: 2_000_000 })})`;
  }
  // The channel's own anthropic_version is what converted traffic uses; a client's header wins.
  channelIds.anthropic = (
    await createChannel(sql, { type: 'anthropic', base_url: anthropic.url, models: [models.anthropic], groups: [group], config: { anthropic_version: '2023-01-01' } })
  ).id;
  channelIds.openai = (await createChannel(sql, { type: 'openai', base_url: openai.url, models: [models.openai], groups: [group] })).id;
  gw = await startGateway();
  const noting = async (...args: Parameters<typeof fetch>) => {
    const res = await fetch(...args);
    lastRequestId = res.headers.get('x-request-id') ?? '';
    return res;
  };
  client = new Anthropic({ apiKey: key, baseURL: gw.url, maxRetries: 0, fetch: noting });
});

afterAll(async () => {
  await gw?.stop();
  await Promise.all([openai?.close(), anthropic?.close()]);
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

const weather: Anthropic.Tool = {
  name: 'get_weather',
  description: 'Weather for a city',
  input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
};

describe('anthropic-version and anthropic-beta', () => {
  it('reach an Anthropic channel as the client sent them', async () => {
    await client.messages.create(
      { model: models.anthropic, max_tokens: 50, messages: [{ role: 'user', content: 'hi' }] },
      { headers: { 'anthropic-version': '2023-06-01', 'anthropic-beta': 'interleaved-thinking-2025-05-14,token-efficient-tools-2025-02-19' } },
    );
    const h = anthropic.calls.at(-1)!.headers;
    expect(h['anthropic-version']).toBe('2023-06-01');
    expect(h['anthropic-beta']).toBe('interleaved-thinking-2025-05-14,token-efficient-tools-2025-02-19');
  });

  it('the channel\'s anthropic_version serves a client that sent none', async () => {
    const res = await fetch(`${gw.url}/v1/messages`, {
      method: 'POST',
      headers: { 'x-api-key': key, 'content-type': 'application/json' },
      body: JSON.stringify({ model: models.anthropic, max_tokens: 50, messages: [{ role: 'user', content: 'hi' }] }),
    });
    expect(res.status).toBe(200);
    expect(anthropic.calls.at(-1)!.headers['anthropic-version']).toBe('2023-01-01');
    expect(anthropic.calls.at(-1)!.headers['anthropic-beta']).toBeUndefined();
  });
});

describe('POST /v1/messages/count_tokens', () => {
  const params = {
    system: 'You are terse.',
    messages: [
      { role: 'user' as const, content: 'How warm is Paris today?' },
      { role: 'assistant' as const, content: [{ type: 'tool_use' as const, id: 'toolu_1', name: 'get_weather', input: { city: 'Paris' } }] },
      { role: 'user' as const, content: [{ type: 'tool_result' as const, tool_use_id: 'toolu_1', content: '21 degrees' }] },
    ],
    tools: [weather],
  };

  it('is exact through an Anthropic channel, which counts it', async () => {
    const before = anthropic.calls.length;
    const { data, response } = await client.messages.countTokens({ model: models.anthropic, ...params }).withResponse();
    // The mock counts words of the system prompt and the messages' text: 3 + 5 + 2.
    expect(data.input_tokens).toBe(10);
    expect(response.headers.get('x-elygate-token-count')).toBe(`exact; channel=${channelIds.anthropic}`);
    const call = anthropic.calls.at(-1)!;
    expect(anthropic.calls.length).toBe(before + 1);
    expect(call.path).toBe('/v1/messages/count_tokens');
    expect(call.body).toEqual({ model: models.anthropic, ...params });
  });

  it('is a tokenizer estimate through any other channel, said so', async () => {
    const before = openai.calls.length;
    const { data, response } = await client.messages.countTokens({ model: models.openai, ...params }).withResponse();
    expect(response.headers.get('x-elygate-token-count')).toBe('estimate; tokenizer=o200k_base');
    const text = ['You are terse.', 'How warm is Paris today?', 'get_weather', '{"city":"Paris"}', '21 degrees', JSON.stringify(params.tools)].join('\n');
    expect(data.input_tokens).toBe(tokenizerCount(text) + 3 * 4);
    expect(openai.calls.length).toBe(before);
  });

  it('is free: no request is admitted, logged or billed', async () => {
    await client.messages.countTokens({ model: models.openai, messages: [{ role: 'user', content: 'free?' }] });
    await client.messages.countTokens({ model: models.anthropic, messages: [{ role: 'user', content: 'free?' }] });
    const [{ n }] = await db()`select count(*)::int as n from admin.requests where id = ${lastRequestId}`;
    expect(n).toBe(0);
  });

  it('checks the key and the model like any request, in Anthropic\'s error shape', async () => {
    const bad = new Anthropic({ apiKey: 'sk-wrong', baseURL: gw.url, maxRetries: 0 });
    const e = await bad.messages.countTokens({ model: models.anthropic, messages: [{ role: 'user', content: 'x' }] }).catch((err) => err);
    expect(e).toBeInstanceOf(Anthropic.AuthenticationError);
    expect(e.error).toMatchObject({ type: 'error', error: { type: 'authentication_error' } });
    const missing = await client.messages.countTokens({ model: unique('no-such-model'), messages: [{ role: 'user', content: 'x' }] }).catch((err) => err);
    expect(missing).toBeInstanceOf(Anthropic.NotFoundError);
  });
});

describe('extended thinking and streamed tool input', () => {
  it('an Anthropic channel: thinking blocks, signature and input_json_delta pass through', async () => {
    const stream = client.messages.stream({ model: models.anthropic, max_tokens: 4000, thinking: { type: 'enabled', budget_tokens: 2000 }, tools: [weather], messages: [{ role: 'user', content: 'weather in Paris?' }] });
    const jsonDeltas: string[] = [];
    stream.on('inputJson', (delta) => jsonDeltas.push(delta));
    const final = await stream.finalMessage();
    expect(final.content.map((b) => b.type)).toEqual(['thinking', 'text', 'tool_use']);
    expect(final.content[0]).toMatchObject({ type: 'thinking', thinking: 'Let me think about it.', signature: 'EqQBCkYIBxgCKkBmockSignature' });
    expect(final.content[2]).toMatchObject({ name: 'get_weather', input: { city: 'Paris' } });
    expect(jsonDeltas.join('')).toBe('{"city": "Paris"}');
    expect(anthropic.calls.at(-1)!.body.thinking).toEqual({ type: 'enabled', budget_tokens: 2000 });
  });

  it.each([false, true])('an OpenAI channel (stream: %s): the budget becomes a reasoning effort, the reasoning a thinking block', async (streamed) => {
    const params = { model: models.openai, max_tokens: 4000, thinking: { type: 'enabled' as const, budget_tokens: 2000 }, tools: [weather], messages: [{ role: 'user' as const, content: 'weather in Paris?' }] };
    const jsonDeltas: string[] = [];
    let final: Anthropic.Message;
    if (streamed) {
      const stream = client.messages.stream(params);
      stream.on('inputJson', (delta) => jsonDeltas.push(delta));
      final = await stream.finalMessage();
    } else {
      final = await client.messages.create(params);
    }
    const sent = openai.calls.at(-1)!.body;
    expect(sent.reasoning_effort).toBe('medium');
    expect(sent.thinking).toBeUndefined();
    expect(final.content.map((b) => b.type)).toEqual(['thinking', 'tool_use']);
    expect((final.content[0] as Anthropic.ThinkingBlock).thinking).toBe('Thinking (medium) first.');
    expect(final.content[1]).toMatchObject({ type: 'tool_use', name: 'get_weather', input: { city: 'Paris' } });
    expect(final.stop_reason).toBe('tool_use');
    if (streamed) expect(jsonDeltas.join('')).toBe('{"city":"Paris"}');
    const row = await ledgerRow(lastRequestId);
    expect(row).toMatchObject({ usage_source: 'upstream', prompt_tokens: final.usage.input_tokens, completion_tokens: final.usage.output_tokens });
    expect(row.amount_micros).toBe(final.usage.input_tokens + 2 * final.usage.output_tokens);
  });
});

describe('what a chat request cannot carry', () => {
  const pdf = { type: 'document' as const, source: { type: 'base64' as const, media_type: 'application/pdf' as const, data: 'JVBERi0xLjQK' } };
  const cases: [string, Partial<Anthropic.MessageCreateParamsNonStreaming>, string][] = [
    ['a PDF document', { messages: [{ role: 'user', content: [{ type: 'text', text: 'summarise' }, pdf] }] }, 'messages.0.content.1.type'],
    ['a server tool', { tools: [{ type: 'web_search_20250305', name: 'web_search' } as any] }, 'tools.0'],
    ['top_k', { top_k: 5 } as any, 'top_k'],
  ];

  it.each(cases)('%s is refused for an OpenAI channel, naming it', async (_what, fields, param) => {
    const before = openai.calls.length;
    const e = await client.messages.create({ model: models.openai, max_tokens: 50, messages: [{ role: 'user', content: 'x' }], ...fields }).catch((err) => err);
    expect(e).toBeInstanceOf(Anthropic.BadRequestError);
    expect(e.error).toMatchObject({ type: 'error', error: { type: 'invalid_request_error' } });
    expect(e.error.error.message).toContain(param);
    expect(openai.calls.length).toBe(before);
  });

  it.each(cases)('%s passes through to an Anthropic channel', async (_what, fields) => {
    const msg = await client.messages.create({ model: models.anthropic, max_tokens: 50, messages: [{ role: 'user', content: 'x' }], ...fields });
    expect(msg.type).toBe('message');
  });
});

describe('a recorded Claude Code turn, replayed', () => {
  const recorded = JSON.parse(readFileSync(join(__dirname, 'fixtures', 'claude-code-messages-request.json'), 'utf8'));

  async function replay(kind: Kind) {
    // Claude Code's body and headers as they were, through the SDK it uses (a plain object is sent unchanged).
    const stream = client.messages.stream({ ...recorded.body, model: models[kind] }, { headers: recorded.headers });
    const events: Anthropic.MessageStreamEvent[] = [];
    stream.on('streamEvent', (e) => events.push(e));
    const final = await stream.finalMessage();
    return { final, events, requestId: lastRequestId };
  }

  it('through an Anthropic channel: as it was, cache_control and beta header included', async () => {
    const { final, events, requestId } = await replay('anthropic');
    const call = anthropic.calls.at(-1)!;
    expect(call.body).toEqual({ ...recorded.body, model: models.anthropic });
    expect(call.headers['anthropic-beta']).toBe(recorded.headers['anthropic-beta']);
    expect(events[0].type).toBe('message_start');
    expect(events.at(-1)!.type).toBe('message_stop');
    expect(final.content.map((b) => b.type)).toEqual(['thinking', 'text']);
    expect((final.content[1] as Anthropic.TextBlock).text).toContain('tool said:');
    const row = await ledgerRow(requestId);
    expect(row).toMatchObject({ usage_source: 'upstream', prompt_tokens: final.usage.input_tokens, completion_tokens: final.usage.output_tokens });
  });

  it('through an OpenAI channel: converted, thinking and the streamed tool call back in Anthropic events', async () => {
    const { final, events, requestId } = await replay('openai');
    const sent = openai.calls.at(-1)!.body;
    expect(sent.messages.map((m: any) => m.role)).toEqual(['system', 'user', 'assistant', 'tool', 'user']);
    expect(sent.messages[0].content).toBe(recorded.body.system.map((b: any) => b.text).join(''));
    expect(sent.messages[2]).toMatchObject({ content: 'Let me read the file.', tool_calls: [{ id: 'toolu_01ReadSum', function: { name: 'Read' } }] });
    expect(sent.messages[3]).toEqual({ role: 'tool', tool_call_id: 'toolu_01ReadSum', content: recorded.body.messages[2].content[0].content });
    expect(sent.tools.map((t: any) => t.function.name)).toEqual(['Bash', 'Glob', 'Grep', 'Read', 'Edit', 'TodoWrite']);
    expect(sent).toMatchObject({ reasoning_effort: 'medium', stream: true, max_tokens: 32000, temperature: 1, user: recorded.body.metadata.user_id });
    expect(openai.calls.at(-1)!.headers['anthropic-beta']).toBeUndefined();

    const types = events.map((e) => e.type);
    expect(types[0]).toBe('message_start');
    expect(types.at(-1)).toBe('message_stop');
    expect(events.some((e) => e.type === 'content_block_delta' && e.delta.type === 'thinking_delta')).toBe(true);
    expect(events.some((e) => e.type === 'content_block_delta' && e.delta.type === 'input_json_delta')).toBe(true);
    expect(final.content.map((b) => b.type)).toEqual(['thinking', 'tool_use']);
    expect(final.content[1]).toMatchObject({ name: 'Bash', input: { city: 'Paris' } });
    expect(final.stop_reason).toBe('tool_use');
    const row = await ledgerRow(requestId);
    expect(row).toMatchObject({ usage_source: 'upstream', prompt_tokens: final.usage.input_tokens, completion_tokens: final.usage.output_tokens });
  });
});
