// The media endpoints through the real gateway with the `openai` npm client (images, speech,
// transcriptions, moderations) and fetch (rerank, Cohere's and Jina's shapes), against the mock:
// each billed by its unit at the model's unit price, the receipt header equal to the ledger row.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import OpenAI, { toFile } from 'openai';
import { closeDb, createChannel, createGroup, createKey, createUser, db, unique } from '../support/db';
import { startGateway, type RunningGateway } from '../support/gateway';
import { startMockUpstream, type MockUpstream } from '../support/mock-upstream';

let gw: RunningGateway;
let upstream: MockUpstream;
let down: MockUpstream;
let client: OpenAI;
let key: string;
let userId: number;
const m = { image: '', tts: '', stt: '', mod: '', rerank: '', chat: '', claudeOnly: '', imageDown: '', imageBackup: '' };

/** group 1.3 × channel 1.1: every cost below is units × price × 1.43, rounded half-up once. */
const MULT = 1.43;

async function settled() {
  for (let i = 0; i < 500; i++) {
    if ((await gw.metric('elygate_settle_queue_depth')) === 0) return;
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function ledgerOf(id: string) {
  await settled();
  const [l] = await db()`select amount_micros::bigint as amount, units, unit_price::bigint as unit_price, prompt_tokens, usage_source
                            from admin.ledger where request_id = ${id}`;
  return l
    ? { units: l.units as number, prompt_tokens: l.prompt_tokens as number, usage_source: l.usage_source as string,
        amount: Number(l.amount), unit_price: l.unit_price === null ? null : Number(l.unit_price) }
    : null;
}

/** A PCM WAV file: 8 kHz, 16-bit, mono (16,000 bytes a second), of the given seconds. */
function wav(seconds: number): Buffer {
  const data = Math.round(seconds * 16000);
  const b = Buffer.alloc(44 + data);
  b.write('RIFF', 0, 'latin1');
  b.writeUInt32LE(36 + data, 4);
  b.write('WAVEfmt ', 8, 'latin1');
  b.writeUInt32LE(16, 16);
  b.writeUInt16LE(1, 20);
  b.writeUInt16LE(1, 22);
  b.writeUInt32LE(8000, 24);
  b.writeUInt32LE(16000, 28);
  b.writeUInt16LE(2, 32);
  b.writeUInt16LE(16, 34);
  b.write('data', 36, 'latin1');
  b.writeUInt32LE(data, 40);
  return b;
}

beforeAll(async () => {
  upstream = await startMockUpstream();
  down = await startMockUpstream();
  down.mode = { kind: 'status', status: 503 };
  const sql = db();
  const group = await createGroup(sql);
  await sql`update private.groups set price_multiplier = 1.3 where name = ${group}`;
  for (const k of Object.keys(m) as (keyof typeof m)[]) m[k] = unique(k);
  const upsert = (args: Record<string, unknown>) => sql`select admin.model_upsert(${sql.json(args as never)})`;
  await upsert({ name: m.image, image_prices: { '1024x1024': 40_000, '1024x1024/hd': 80_000, '1792x1024': 80_000 } });
  await upsert({ name: m.tts, character_price: 15_000_000 });
  await upsert({ name: m.stt, audio_second_price: 100 });
  await upsert({ name: m.mod, input_price: 1_000_000 });
  await upsert({ name: m.rerank, search_unit_price: 2_000, input_price: 2_000_000 });
  await upsert({ name: m.chat, input_price: 1_000_000, output_price: 1_000_000 });
  await upsert({ name: m.claudeOnly, image_prices: { default: 1000 } });
  // (only image prices: a fallback is listed by its price for the request's unit, private.route_fallbacks)
  await upsert({ name: m.imageBackup, image_prices: { '1024x1024': 10_000 } });
  await upsert({ name: m.imageDown, image_prices: { '1024x1024': 40_000 }, fallbacks: [m.imageBackup] });
  const user = await createUser(sql, { group });
  userId = user.id;
  await sql`select admin.wallet_credit(${sql.json({ user_id: user.id, amount_micros: 1_000_000_000 })})`;
  key = (await createKey(sql, { user_id: user.id })).key;
  await createChannel(sql, {
    base_url: upstream.url,
    models: [m.image, m.tts, m.stt, m.mod, m.rerank, m.chat, m.imageBackup],
    groups: [group],
    cost_multiplier: 1.1,
    // the upstream knows the transcription model by another name: the multipart field is rewritten
    model_mapping: { [m.stt]: 'whisper-1' },
  });
  await createChannel(sql, { base_url: down.url, models: [m.imageDown], groups: [group], cost_multiplier: 1.1 });
  await createChannel(sql, { type: 'anthropic', base_url: upstream.url, models: [m.claudeOnly], groups: [group] });
  gw = await startGateway();
  client = new OpenAI({ apiKey: key, baseURL: `${gw.url}/v1`, maxRetries: 0 });
});

afterAll(async () => {
  await gw?.stop();
  await upstream?.close();
  await down?.close();
  await closeDb();
});

describe('media endpoints, billed by their unit', () => {
  it('images: n images at the size and quality price; receipt = ledger', async () => {
    const { data, response } = await client.images.generate({ model: m.image, prompt: 'a red fox', n: 2, size: '1024x1024', quality: 'hd' }).withResponse();
    expect(data.data).toHaveLength(2);
    expect(data.data![0].url).toMatch(/^https:\/\/images\.example\//);
    const l = await ledgerOf(response.headers.get('x-request-id')!);
    expect(l).toMatchObject({ units: 2, unit_price: 80_000_000_000, usage_source: 'upstream' });
    expect(l!.amount).toBe(Math.round(2 * 80_000 * MULT)); // 228,800
    expect(Number(response.headers.get('x-elygate-cost-micros'))).toBe(l!.amount);
  });

  it('images: a fallback model that serves is billed at its own image price', async () => {
    const { data, response } = await client.images.generate({ model: m.imageDown, prompt: 'x', size: '1024x1024' }).withResponse();
    expect(data.data).toHaveLength(1);
    expect(response.headers.get('x-elygate-model')).toBe(m.imageBackup);
    const l = await ledgerOf(response.headers.get('x-request-id')!);
    expect(l).toMatchObject({ units: 1, unit_price: 10_000_000_000 });
    expect(l!.amount).toBe(Math.round(10_000 * MULT));
    expect(Number(response.headers.get('x-elygate-cost-micros'))).toBe(l!.amount);
  });

  it('images: a size the model has no price for is refused before the upstream, naming it', async () => {
    const before = upstream.media.calls.length;
    await db()`select admin.option_set('AllowUnpricedModels', 'false')`;
    const err = await client.images.generate({ model: m.image, prompt: 'x', size: '256x256' }).catch((e) => e);
    await db()`select admin.option_set('AllowUnpricedModels', 'true')`; // (the suite's setting)
    expect(err).toBeInstanceOf(OpenAI.APIError);
    expect(err.message).toContain('256x256');
    expect(err.error?.param ?? err.param).toBe('size');
    expect(upstream.media.calls.length).toBe(before);
  });

  it('speech: the audio streamed through, billed per input character', async () => {
    const input = 'Hello there, world.';
    const res = await client.audio.speech.create({ model: m.tts, voice: 'alloy', input }).asResponse();
    expect(res.headers.get('content-type')).toBe('audio/mpeg');
    const audio = Buffer.from(await res.arrayBuffer());
    expect(audio.length).toBe(upstream.media.speechBytes);
    expect(audio[5000]).toBe(4); // (the mock's 5th kilobyte is filled with 4s: the bytes as sent)
    const l = await ledgerOf(res.headers.get('x-request-id')!);
    expect(l).toMatchObject({ units: input.length, unit_price: 15_000_000 });
    expect(l!.amount).toBe(Math.round((input.length * 15_000_000 * MULT) / 1_000_000)); // 19 chars → 408
    expect(Number(res.headers.get('x-elygate-cost-micros'))).toBe(l!.amount);
  });

  it('transcription: the upload streamed on with the mapped model, billed by the reported duration', async () => {
    const file = await toFile(wav(3.5), 'speech.wav', { type: 'audio/wav' });
    const { data, response } = await client.audio.transcriptions.create({ file, model: m.stt, response_format: 'verbose_json' }).withResponse();
    expect(data.text).toBe(`transcribed ${44 + 56000} bytes`);
    const call = upstream.media.calls.at(-1)!;
    expect(call.fields.model).toBe('whisper-1');
    expect(call.fileBytes).toBe(44 + 56000);
    const l = await ledgerOf(response.headers.get('x-request-id')!);
    expect(l).toMatchObject({ units: 4, unit_price: 100_000_000, usage_source: 'upstream' }); // 3.5 s, billed by the second begun
    expect(l!.amount).toBe(Math.round(4 * 100 * MULT));
    expect(Number(response.headers.get('x-elygate-cost-micros'))).toBe(l!.amount);
  });

  it('transcription: a file named "model" keeps its bytes; only the model field is mapped', async () => {
    const file = await toFile(wav(1), 'model', { type: 'audio/wav' });
    const { data } = await client.audio.transcriptions.create({ file, model: m.stt, response_format: 'verbose_json' }).withResponse();
    expect(data.text).toBe(`transcribed ${44 + 16000} bytes`);
    const call = upstream.media.calls.at(-1)!;
    expect(call.fields.model).toBe('whisper-1');
    expect(call.fileBytes).toBe(44 + 16000);
  });

  it("transcription: a WAV whose format chunk ends past the file's first 4 KB is estimated by its size", async () => {
    // RIFF, WAVE, a LIST chunk of 4,058 bytes, then "fmt " at byte 4,078: its byte rate (bytes 16-19
    // of the chunk) lies past the 4,096 bytes the gateway reads of the file.
    const audio = wav(1);
    const list = Buffer.alloc(8 + 4058);
    list.write('LIST', 0, 'latin1');
    list.writeUInt32LE(4058, 4);
    const file = Buffer.concat([audio.subarray(0, 12), list, audio.subarray(12)]);
    file.writeUInt32LE(file.length - 8, 4);
    const { response } = await client.audio.transcriptions.create({ file: await toFile(file, 'long-head.wav', { type: 'audio/wav' }), model: m.stt }).withResponse();
    expect(response.status).toBe(200);
    expect(response.headers.get('x-elygate-usage-source')).toBe('estimated');
    const l = await ledgerOf(response.headers.get('x-request-id')!);
    expect(l).toMatchObject({ usage_source: 'estimated' });
    expect(l!.units).toBeGreaterThanOrEqual(1);
  });

  it('transcription: without a reported duration, the seconds are estimated from the file and marked so', async () => {
    const file = await toFile(wav(2.25), 'speech.wav', { type: 'audio/wav' });
    const { response } = await client.audio.transcriptions.create({ file, model: m.stt }).withResponse();
    expect(response.headers.get('x-elygate-usage-source')).toBe('estimated');
    const l = await ledgerOf(response.headers.get('x-request-id')!);
    expect(l).toMatchObject({ units: 3, usage_source: 'estimated' });
    expect(Number(response.headers.get('x-elygate-cost-micros'))).toBe(l!.amount);
  });

  it('transcription: an upload over MaxUploadBytes gets an OpenAI-style 413 before admission', async () => {
    const sql = db();
    await sql`select admin.option_set('MaxUploadBytes', '4096')`;
    try {
      const form = () => {
        const f = new FormData();
        f.set('file', new Blob([new Uint8Array(wav(1))], { type: 'audio/wav' }), 'a.wav');
        f.set('model', m.stt);
        return f;
      };
      // (Options reach the gateway by NOTIFY: wait for the limit, asking without a key meanwhile.)
      let res: Response | null = null;
      for (let i = 0; i < 200; i++) {
        res = await fetch(`${gw.url}/v1/audio/transcriptions`, { method: 'POST', body: form() });
        if (res.status === 413) break;
        await res.arrayBuffer();
        await new Promise((r) => setTimeout(r, 25));
      }
      expect(res!.status).toBe(413);
      const body = await res!.json();
      expect(body.error).toMatchObject({ type: 'invalid_request_error', code: 'request_too_large' });
      expect(body.error.message).toContain('MaxUploadBytes');
      const err = await client.audio.transcriptions.create({ file: await toFile(wav(1), 'a.wav'), model: m.stt }).catch((e) => e);
      expect(err.status).toBe(413);
    } finally {
      await sql`select admin.option_set('MaxUploadBytes', '26214400')`;
    }
  });

  it('moderations: tokens counted (the upstream reports none), marked estimated; receipt = ledger', async () => {
    const { data, response } = await client.moderations.create({ model: m.mod, input: 'please flag me now' }).withResponse();
    expect(data.results[0].flagged).toBe(true);
    const l = await ledgerOf(response.headers.get('x-request-id')!);
    expect(l!.usage_source).toBe('estimated');
    expect(l!.prompt_tokens).toBeGreaterThan(0);
    expect(l!.amount).toBe(Math.round(l!.prompt_tokens * MULT));
    expect(Number(response.headers.get('x-elygate-cost-micros'))).toBe(l!.amount);
  });

  const rerank = (body: unknown) =>
    fetch(`${gw.url}/v1/rerank`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });

  it('rerank, Cohere shape: billed by meta.billed_units.search_units', async () => {
    const res = await rerank({ model: m.rerank, query: 'capital of France', documents: ['Paris is the capital', 'Berlin', { text: 'Rome' }], top_n: 2 });
    expect(res.status).toBe(200);
    const body = await res.json();
    expect(body.results).toHaveLength(2);
    const l = await ledgerOf(res.headers.get('x-request-id')!);
    expect(l).toMatchObject({ units: 1, unit_price: 2_000_000_000, prompt_tokens: 0, usage_source: 'upstream' });
    expect(l!.amount).toBe(Math.round(2_000 * MULT));
    expect(Number(res.headers.get('x-elygate-cost-micros'))).toBe(l!.amount);
  });

  it('rerank, Jina shape: billed by usage.total_tokens at the input price', async () => {
    upstream.media.rerankShape = 'jina';
    try {
      const res = await rerank({ model: m.rerank, query: 'capital of France', documents: ['Paris is the capital of France', 'Berlin'] });
      expect(res.status).toBe(200);
      const body = await res.json();
      expect(body.usage.total_tokens).toBe(10); // (the mock's tokens are words: 3 + 6 + 1)
      const l = await ledgerOf(res.headers.get('x-request-id')!);
      expect(l).toMatchObject({ units: 0, prompt_tokens: 10 });
      expect(l!.amount).toBe(Math.round((10 * 2_000_000 * MULT) / 1_000_000)); // 28.6 → 29
      expect(Number(res.headers.get('x-elygate-cost-micros'))).toBe(l!.amount);
    } finally {
      upstream.media.rerankShape = 'cohere';
    }
  });

  it('a 200 that is not an images answer is an upstream failure, not billed', async () => {
    upstream.mode = { kind: 'status', status: 200 }; // (the mock's error object, with status 200)
    try {
      const { response } = await client.images.generate({ model: m.image, prompt: 'x', size: '1024x1024' }).withResponse().catch((e) => ({ response: null, e }));
      expect(response).toBeNull();
    } finally {
      upstream.mode = { kind: 'ok' };
    }
    await settled();
    const [r] = await db()`select cost_micros::int, status, error_message from admin.requests where model = ${m.image} order by created_at desc limit 1`;
    expect(r).toMatchObject({ cost_micros: 0, status: 'error', error_message: expect.stringContaining('without the fields of a images/generations answer') });
  });

  it('an upstream error is passed on and not billed', async () => {
    const [{ balance: before }] = await db()`select balance_micros::bigint as balance from private.wallets where user_id = ${userId}`;
    upstream.mode = { kind: 'status', status: 400 };
    try {
      const err = await client.images.generate({ model: m.image, prompt: 'x', size: '1024x1024' }).catch((e) => e);
      expect(err.status).toBe(400);
    } finally {
      upstream.mode = { kind: 'ok' };
    }
    await settled();
    const [r] = await db()`select cost_micros::int, status from admin.requests where model = ${m.image} order by created_at desc limit 1`;
    expect(r).toEqual({ cost_micros: 0, status: 'error' });
    const [{ balance: after }] = await db()`select balance_micros::bigint as balance from private.wallets where user_id = ${userId}`;
    expect(after).toBe(before);
  });

  it('the reservation covers n images: a wallet that cannot is refused', async () => {
    const sql = db();
    const poorGroup = await createGroup(sql);
    const poor = await createUser(sql, { group: poorGroup });
    await sql`select admin.wallet_credit(${sql.json({ user_id: poor.id, amount_micros: 100_000 })})`;
    const poorKey = (await createKey(sql, { user_id: poor.id })).key;
    await sql`update private.channels set groups = groups || ${[poorGroup]}::text[] where ${m.image} = any(models)`;
    const poorClient = new OpenAI({ apiKey: poorKey, baseURL: `${gw.url}/v1`, maxRetries: 0 });
    const one = await poorClient.images.generate({ model: m.image, prompt: 'x', n: 1, size: '1024x1024' });
    expect(one.data).toHaveLength(1);
    const err = await poorClient.images.generate({ model: m.image, prompt: 'x', n: 3, size: '1024x1024' }).catch((e) => e);
    expect(err.status).toBe(429);
    expect(err.code).toBe('insufficient_quota');
  });

  it('what the gateway does not relay is a 400 naming the field, before admission', async () => {
    const post = (path: string, body: unknown) =>
      fetch(`${gw.url}/v1/${path}`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const img = await post('images/generations', { model: m.image, prompt: 'x', stream: true });
    expect(img.status).toBe(400);
    expect((await img.json()).error).toMatchObject({ param: 'stream', type: 'invalid_request_error' });
    const sse = await post('audio/speech', { model: m.tts, voice: 'alloy', input: 'hi', stream_format: 'sse' });
    expect(sse.status).toBe(400);
    expect((await sse.json()).error.param).toBe('stream_format');
    const docs = await post('rerank', { model: m.rerank, query: 'q', documents: [] });
    expect(docs.status).toBe(400);
    expect((await docs.json()).error.param).toBe('documents');
    const noFile = new FormData();
    noFile.set('model', m.stt);
    const up = await fetch(`${gw.url}/v1/audio/transcriptions`, { method: 'POST', headers: { authorization: `Bearer ${key}` }, body: noFile });
    expect(up.status).toBe(400);
    expect((await up.json()).error.param).toBe('file');
    // A form's "stream" is text: "true" is refused by name, "false" is what it says.
    const upload = (stream: string) => {
      const form = new FormData();
      form.set('file', new Blob([new Uint8Array(wav(1))], { type: 'audio/wav' }), 'a.wav');
      form.set('model', m.stt);
      form.set('stream', stream);
      return fetch(`${gw.url}/v1/audio/transcriptions`, { method: 'POST', headers: { authorization: `Bearer ${key}` }, body: form });
    };
    const streamed = await upload('true');
    expect(streamed.status).toBe(400);
    expect((await streamed.json()).error).toMatchObject({ param: 'stream', message: expect.stringMatching(/Streaming transcription is not supported/) });
    const notStreamed = await upload('false');
    expect(notStreamed.status).toBe(200);
    expect((await notStreamed.json()).text).toBe(`transcribed ${44 + 16000} bytes`);
  });

  it('a channel type without the endpoint answers with a clear error naming both', async () => {
    const err = await client.images.generate({ model: m.claudeOnly, prompt: 'x' }).catch((e) => e);
    expect(err).toBeInstanceOf(OpenAI.APIError);
    expect(err.message).toContain('an anthropic channel cannot serve /v1/images/generations');
  });
});
