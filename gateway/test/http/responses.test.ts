// POST /v1/responses: passed through to OpenAI-type channels untouched; converted for Anthropic
// and Gemini channels (non-stream, function tools); what cannot be converted gets a clear error.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import OpenAI from 'openai';
import { closeDb, createChannel, createGroup, createKey, createUser, db, unique } from '../support/db';
import { startGateway, type RunningGateway } from '../support/gateway';
import { startMockUpstream, type MockUpstream } from '../support/mock-upstream';
import { startMockAnthropic, type MockAnthropic } from '../support/mock-anthropic';
import { startMockGemini, type MockGemini } from '../support/mock-gemini';

let gw: RunningGateway;
let openai: MockUpstream;
let anthropic: MockAnthropic;
let gemini: MockGemini;
let client: OpenAI;
const models: Record<'openai' | 'anthropic' | 'gemini', string> = {} as never;

beforeAll(async () => {
  [openai, anthropic, gemini] = await Promise.all([startMockUpstream(), startMockAnthropic(), startMockGemini()]);
  const sql = db();
  const group = await createGroup(sql);
  for (const t of ['openai', 'anthropic', 'gemini'] as const) models[t] = unique(`resp-${t}`);
  const user = await createUser(sql, { group });
  const { key } = await createKey(sql, { user_id: user.id });
  await createChannel(sql, { type: 'openai', base_url: openai.url, models: [models.openai], groups: [group] });
  await createChannel(sql, { type: 'anthropic', base_url: anthropic.url, models: [models.anthropic], groups: [group] });
  await createChannel(sql, { type: 'gemini', base_url: gemini.url, models: [models.gemini], groups: [group] });
  gw = await startGateway();
  client = new OpenAI({ apiKey: key, baseURL: `${gw.url}/v1`, maxRetries: 0 });
});

afterAll(async () => {
  await gw?.stop();
  await Promise.all([openai?.close(), anthropic?.close(), gemini?.close()]);
  await closeDb();
});

describe('/v1/responses', () => {
  it('reaches an OpenAI-type channel as it was sent', async () => {
    // The mock answers /v1/responses with a response object: the client must accept it.
    const r = await client.responses.create({ model: models.openai, input: 'hello', store: false });
    expect(r.object).toBe('response');
    const call = openai.calls.at(-1)!;
    expect(call.path).toBe('/v1/responses');
    expect(call.body).toEqual({ model: models.openai, input: 'hello', store: false });
  });

  it.each(['anthropic', 'gemini'] as const)('is converted for a %s channel: text and a function call', async (type) => {
    const r = await client.responses.create({ model: models[type], instructions: 'be brief', input: 'ping pong', max_output_tokens: 50 });
    expect(r.object).toBe('response');
    expect(r.status).toBe('completed');
    expect(r.output_text).toBe('echo: ping pong');
    expect(r.usage?.output_tokens).toBe(3);

    const withTool = await client.responses.create({
      model: models[type],
      input: [{ role: 'user', content: 'weather in Paris?' }],
      tools: [{ type: 'function', name: 'get_weather', strict: false, parameters: { type: 'object', properties: { city: { type: 'string' } } } }],
    });
    const call = withTool.output.find((o) => o.type === 'function_call') as OpenAI.Responses.ResponseFunctionToolCall;
    expect(call).toMatchObject({ name: 'get_weather' });
    expect(JSON.parse(call.arguments)).toEqual({ city: 'Paris' });
  });

  it('refuses what cannot be converted, naming why', async () => {
    const e = await client.responses.create({ model: models.anthropic, input: 'x', stream: true }).catch((err) => err);
    expect(e.status).toBe(503);
    expect(e.message).toContain('streaming /v1/responses is only available through OpenAI-type channels');
  });
});
