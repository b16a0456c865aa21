// The list pages' search box: a case-insensitive substring, with LIKE's wildcards taken literally.
export const likePattern = (q: string) => `%${q.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;

/** The trimmed `q` parameter, or null (at most 200 characters: it is a search, not a document). */
export const searchOf = (url: URL) => url.searchParams.get('q')?.trim().slice(0, 200) || null;

export const BIGINT_ID = /^\d{1,18}$/;
