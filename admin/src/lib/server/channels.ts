import { csv, jsonField, compact } from './forms';

export function channelArgs(f: FormData, creating: boolean) {
  const apiKey = String(f.get('api_key') ?? '').trim();
  return compact({
    name: String(f.get('name') ?? '').trim(),
    type: String(f.get('type') ?? 'openai'),
    base_url: String(f.get('base_url') ?? '').trim(),
    // On edit, an empty key box keeps the stored keys (they are never shown again).
    api_key: apiKey || undefined,
    models: csv(f.get('models')),
    groups: csv(f.get('groups')).length ? csv(f.get('groups')) : undefined,
    model_mapping: jsonField(f.get('model_mapping'), 'model_mapping') ?? (creating ? undefined : {}),
    config: jsonField(f.get('config'), 'config') ?? (creating ? undefined : {}),
    priority: String(f.get('priority') ?? '') === '' ? undefined : Number(f.get('priority')),
    weight: String(f.get('weight') ?? '') === '' ? undefined : Number(f.get('weight')),
    cost_multiplier: String(f.get('cost_multiplier') ?? '') === '' ? undefined : Number(f.get('cost_multiplier')),
  });
}
