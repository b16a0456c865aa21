// Turns form fields into the JSON objects admin.* functions take. Only shapes values; every rule
// (required fields, ranges, unknown fields) is checked by the SQL function, which names the field.
export const csv = (v: FormDataEntryValue | null) =>
  String(v ?? '')
    .split(/[,\n]/)
    .map((s) => s.trim())
    .filter(Boolean);

export function jsonField(v: FormDataEntryValue | null, field: string): unknown {
  const s = String(v ?? '').trim();
  if (!s) return undefined;
  try {
    return JSON.parse(s);
  } catch {
    throw Object.assign(new Error(`"${field}" is not valid JSON.`), { code: 'BADIN', column_name: field });
  }
}

export const intOrNull = (v: FormDataEntryValue | null) => {
  const s = String(v ?? '').trim();
  return s === '' ? null : Number(s);
};

/** Removes undefined (absent) fields; null stays (it clears a limit). */
export const compact = (o: Record<string, unknown>) => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));

/** Key fields from the key form (shared by the admin and self-service pages). */
export function keyLimits(f: FormData) {
  const models = csv(f.get('allowed_models'));
  const ips = csv(f.get('allowed_ips'));
  const exp = String(f.get('expires_at') ?? '').trim();
  const quota = String(f.get('quota_usd') ?? '').trim();
  return {
    name: String(f.get('name') ?? '').trim(),
    expires_at: exp ? new Date(exp).toISOString() : null,
    allowed_models: models.length ? models : null,
    allowed_ips: ips.length ? ips : null,
    quota_micros: quota === '' ? null : Math.round(Number(quota) * 1e6),
    rpm_limit: intOrNull(f.get('rpm_limit')),
    tpm_limit: intOrNull(f.get('tpm_limit')),
    concurrency_limit: intOrNull(f.get('concurrency_limit')),
  };
}

