// /metrics names channels and models: on the public port it answers a scraper on this machine
// (a direct loopback connection) or one with ELYGATE_METRICS_TOKEN, never a request that came
// through a proxy (which, on the same host, arrives from loopback too).
import { afterAll, describe, expect, it } from 'vitest';
import { closeDb } from '../support/db';
import { startGateway, type RunningGateway } from '../support/gateway';

const running: RunningGateway[] = [];
afterAll(async () => {
  await Promise.all(running.map((g) => g.stop()));
  await closeDb();
});

const scrape = (gw: RunningGateway, headers: Record<string, string> = {}) => fetch(`${gw.url}/metrics`, { headers });

describe('/metrics access', () => {
  it('without a token: direct loopback only', async () => {
    const gw = await startGateway();
    running.push(gw);
    expect((await scrape(gw)).status).toBe(200);
    const proxied = await scrape(gw, { 'x-forwarded-for': '203.0.113.7' });
    expect(proxied.status).toBe(401);
    expect((await proxied.json()).error.code).toBe('metrics_forbidden');
    expect((await scrape(gw, { forwarded: 'for=203.0.113.7' })).status).toBe(401);
  });

  it('with ELYGATE_METRICS_TOKEN: the bearer token from anywhere', async () => {
    const gw = await startGateway({ ELYGATE_METRICS_TOKEN: 'scrape-secret' });
    running.push(gw);
    expect((await scrape(gw, { 'x-forwarded-for': '203.0.113.7', authorization: 'Bearer scrape-secret' })).status).toBe(200);
    expect((await scrape(gw, { 'x-forwarded-for': '203.0.113.7', authorization: 'Bearer wrong' })).status).toBe(401);
    expect((await scrape(gw, { 'x-forwarded-for': '203.0.113.7' })).status).toBe(401);
    expect((await scrape(gw)).status).toBe(200);
  });
});
