// Confirmation before an action that cannot be undone (revoke, purge, debit): the browser's own
// dialog, so it works without any script of ours beyond this handler, and a keyboard user gets the
// platform's accessible prompt. Reversible actions (disable/enable) act at once and say so instead.
export const confirmSubmit = (question: string) => (e: SubmitEvent) => {
  if (!confirm(question)) e.preventDefault();
};
