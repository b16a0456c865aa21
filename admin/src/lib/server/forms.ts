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

/** Empty → null (no limit). Anything else goes to SQL as typed, which says if it is not a whole
 * number in range (a NaN here would have become a silent null). */
export const intOrNull = (v: FormDataEntryValue | null) => {
  const s = String(v ?? '').trim();
  return s === '' ? null : s;
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
    // datetime-local has no zone and the label says UTC; SQL checks the date (private.arg_time).
    expires_at: exp ? (/[zZ]|[+-]\d\d:?\d\d$/.test(exp) ? exp : `${exp}Z`) : null,
    allowed_models: models.length ? models : null,
    allowed_ips: ips.length ? ips : null,
    quota_micros: quota === '' ? null : Number.isFinite(Number(quota)) ? Math.round(Number(quota) * 1e6) : quota,
    rpm_limit: intOrNull(f.get('rpm_limit')),
    tpm_limit: intOrNull(f.get('tpm_limit')),
    concurrency_limit: intOrNull(f.get('concurrency_limit')),
    // '' = the model's mode, else the CacheMode option (SQL checks the value)
    cache_mode: String(f.get('cache_mode') ?? '').trim() || null,
  };
}


// ---------------------------------------------------------------------------------------------
// Database errors as sentences: the one place a form's error text is decided.
// The admin.* functions raise custom SQLSTATEs (BADIN, BADCH, BADOP, …) whose messages are written
// for people and name the field (sql/ERRORS.md); those pass through. Anything else is PostgreSQL's
// own text ("value out of range for type integer", "violates check constraint users_username_check",
// "numeric field overflow"), which means nothing to an operator: it becomes a sentence saying what
// is allowed, by constraint where PostgreSQL names one, else by error class.

export interface FormProblem {
  code: string;
  message: string;
  field: string | null;
}

/** Check constraints the panel's forms can reach, as rules a person can follow. */
const CONSTRAINTS: Record<string, [field: string, rule: string]> = {
  users_username_check: ['username', 'A username is 1 to 64 characters: letters, digits and _ . @ + - (no spaces).'],
  groups_name_check: ['name', 'A group name is 1 to 64 characters: letters, digits and _ . - (no spaces).'],
  groups_price_multiplier_check: ['price_multiplier', 'A group multiplier must be greater than 0.'],
  channels_name_check: ['name', 'A channel name is 1 to 128 characters.'],
  channels_base_url_check: ['base_url', 'The base URL must start with http:// or https:// and a host name.'],
  channels_weight_check: ['weight', 'A weight is 0 or more.'],
  channels_cost_multiplier_check: ['cost_multiplier', 'A cost multiplier must be greater than 0.'],
  models_name_check: ['name', 'A model name is 1 to 200 characters.'],
  api_keys_rpm_limit_check: ['rpm_limit', 'RPM must be 1 or more (empty for no limit).'],
  api_keys_tpm_limit_check: ['tpm_limit', 'TPM must be 1 or more (empty for no limit).'],
  api_keys_concurrency_limit_check: ['concurrency_limit', 'Concurrency must be 1 or more (empty for no limit).'],
  api_keys_quota_micros_check: ['quota_micros', 'A quota is 0 or more (empty for unlimited).'],
  wallets_credit_limit_micros_check: ['credit_limit_micros', 'A credit limit is 0 or more.'],
};

/** PostgreSQL's own phrasings, wherever they appear (also wrapped inside a custom error's text). */
const RAW: [RegExp, (m: RegExpMatchArray) => [field: string | null, sentence: string]][] = [
  [/violates check constraint "?(\w+)"?/, (m) => CONSTRAINTS[m[1]] ?? [null, 'A value is outside what this field allows.']],
  [/value "?[^"]*"? is out of range for type (integer|bigint|smallint)|(integer|bigint|smallint) out of range|value out of range/,
    () => [null, 'A number is too large: whole-number fields take at most 2147483647 (limits) or 9223372036854775807 (amounts in micro-USD).']],
  [/numeric field overflow/, () => [null, 'A number is too large for its field (multipliers take at most 999999).']],
  [/invalid input syntax for type (integer|bigint|numeric|smallint)/, () => [null, 'A number field holds something that is not a number.']],
  [/invalid input syntax for type (timestamp|date|time)|date\/time field value out of range|time zone .* not recognized/,
    () => [null, 'A date is not valid; use the date picker or a form such as 2030-01-31T12:00.']],
  [/invalid input syntax for type (inet|cidr)/, () => ['allowed_ips', 'An address must be an IP address or a CIDR range such as 10.0.0.0/8.']],
  [/invalid input syntax for type json/, () => [null, 'A JSON field is not valid JSON.']],
  [/duplicate key value violates unique constraint/, () => [null, 'Something with this name already exists.']],
  [/violates foreign key constraint/, () => [null, 'This refers to something that does not exist (any more).']],
  [/violates not-null constraint/, () => [null, 'A required field is empty.']],
];

/** A database error as {code, message, field} for fail(400, …), or null if it is not the form's fault. */
export function formProblem(err: unknown): FormProblem | null {
  const e = err as { code?: string; message?: string; hint?: string; column_name?: string; constraint_name?: string };
  if (!e?.code || !(/^[A-Z]{5}$/.test(e.code) || e.code.startsWith('22') || e.code.startsWith('23'))) return null;
  const text = `${e.message ?? ''}${e.constraint_name ? ` violates check constraint "${e.constraint_name}"` : ''}`;
  for (const [re, say] of RAW) {
    const m = text.match(re);
    if (m) {
      const [field, sentence] = say(m);
      return { code: e.code, message: sentence, field: e.column_name ?? field };
    }
  }
  if (/^[A-Z]{5}$/.test(e.code)) return { code: e.code, message: e.message + (e.hint ? ` ${e.hint}` : ''), field: e.column_name ?? null };
  return { code: e.code, message: 'A value is not in the form this field expects.', field: e.column_name ?? null };
}
