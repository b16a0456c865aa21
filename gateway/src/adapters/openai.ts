// OpenAI-compatible and Azure OpenAI upstreams. Both speak OpenAI's wire format; they differ in the
// URL (Azure: /openai/deployments/{deployment}/...?api-version=...) and the key header (Azure:
// api-key). Also: the decoder that reads an OpenAI chat stream as chunks, for clients of another
// protocol (an Anthropic client served by an OpenAI channel).
import { MALFORMED_EVENT, parseEvent, type ChatChunk, type ChunkDecoder } from './types';

export const AZURE_DEFAULT_API_VERSION = '2024-10-21';

/** "https://api.openai.com" and "https://api.openai.com/v1" both work; any other path is kept. */
export function openAiUrl(baseUrl: string, endpoint: string): string {
  const base = baseUrl.replace(/\/+$/, '');
  const hasPath = /^https?:\/\/[^/]+\/./.test(base + '/');
  return `${hasPath ? base : base + '/v1'}/${endpoint}`;
}

/**
 * Azure OpenAI: the deployment is the upstream model name (after model_mapping), unless
 * config.deployments maps it; the api-version comes from config.api_version.
 */
export function azureUrl(baseUrl: string, endpoint: string, upstreamModel: string, config: Record<string, any>): string {
  const base = baseUrl.replace(/\/+$/, '').replace(/\/openai$/, '');
  const version = encodeURIComponent(String(config.api_version ?? AZURE_DEFAULT_API_VERSION));
  if (endpoint === 'responses') return `${base}/openai/responses?api-version=${version}`;
  const deployment = String(config.deployments?.[upstreamModel] ?? upstreamModel);
  return `${base}/openai/deployments/${encodeURIComponent(deployment)}/${endpoint}?api-version=${version}`;
}

export function openAiHeaders(key: string): Record<string, string> {
  return { 'content-type': 'application/json', accept: 'application/json, text/event-stream', authorization: `Bearer ${key}` };
}

export function azureHeaders(key: string): Record<string, string> {
  return { 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'api-key': key };
}

/** An OpenAI chat stream read as chunks (usage chunk and [DONE] included). */
export function openAiChunkDecoder(): ChunkDecoder {
  let done = false;
  let finished = false;
  let failure: string | null = null;
  return {
    event(_name, data) {
      if (data.trim() === '[DONE]') {
        done = true;
        return [];
      }
      const chunk = parseEvent(data) as ChatChunk | null;
      if (!chunk) {
        failure ??= MALFORMED_EVENT;
        return [];
      }
      if ((chunk as any).error) {
        failure = String((chunk as any).error?.message ?? 'upstream error');
        return [];
      }
      if (!Array.isArray(chunk.choices)) return [];
      if (chunk.choices.some((c: any) => c?.finish_reason)) finished = true;
      return [chunk];
    },
    end: () => [],
    complete: () => done || finished,
    terminated: () => done,
    error: () => failure,
  };
}
