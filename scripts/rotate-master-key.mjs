// `npm run rotate-master-key [-- --new <64 hex digits>]`: re-seals every upstream key and webhook
// secret under a new master key, in one transaction (admin.master_key_rotate), and says what to
// change where. Uses DATABASE_URL, or the embedded database (whose state.json it updates).
//
//   direct  (the usual): the old key is ELYGATE_MASTER_KEY (or the embedded default's); the new
//           one is --new, or generated. Gateways keep serving the channels they have opened; each
//           picks up the new key at its restart.
//   staged  (zero dropped requests on any channel): every gateway and admin already runs with
//           ELYGATE_MASTER_KEY=<new> and ELYGATE_MASTER_KEY_PREVIOUS=<old>; run this with that
//           environment and no --new, and it re-seals what is still under the old key.
// docs/operations.md, "Rotating the master key", has the procedure.
import { randomBytes, createHash } from 'node:crypto';
import postgres from 'postgres';

const HEX = /^[0-9a-fA-F]{64}$/;
const args = process.argv.slice(2);
const flag = (name) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
};
const keyId = (hex) => createHash('sha256').update(Buffer.from(hex, 'hex')).digest().subarray(0, 8).toString('hex');
const list = (s) => (s ?? '').split(',').map((k) => k.trim()).filter(Boolean);
const die = (msg) => {
  console.error(msg);
  process.exit(2);
};

if (args.includes('--help') || args.includes('-h')) {
  console.log('usage: npm run rotate-master-key [-- --new <64 hex digits>]   (see docs/operations.md, "Rotating the master key")');
  process.exit(0);
}
const given = flag('new');
if (args.includes('--new') && !HEX.test(given ?? '')) die('--new takes the new master key: 64 hex digits (openssl rand -hex 32).');

const embedded = !process.env.DATABASE_URL;
let url = process.env.DATABASE_URL;
let st = null;
let pg = null;
if (embedded) {
  pg = await import('./pg.mjs');
  st = pg.readState();
  if (!st) die('No database yet: run `npm start` first (or set DATABASE_URL).');
  url = st.url;
}
const current = process.env.ELYGATE_MASTER_KEY || st?.masterKey || '';
if (!HEX.test(current)) die('Set ELYGATE_MASTER_KEY to the master key the secrets are sealed with now (64 hex digits).');
const previousEnv = list(process.env.ELYGATE_MASTER_KEY_PREVIOUS);
for (const k of previousEnv) if (!HEX.test(k)) die('ELYGATE_MASTER_KEY_PREVIOUS must be master keys of 64 hex digits, separated by commas.');

// staged: the environment already names the new key and the old one; else the current key goes.
const staged = previousEnv.length > 0 && !given;
const newKey = staged ? current : given ?? randomBytes(32).toString('hex');
const oldKeys = staged ? previousEnv : [...new Set([current, ...previousEnv, ...list(st?.previousMasterKey)])].filter((k) => k !== newKey);
if (oldKeys.length === 0) die('The new master key is the one in use: nothing to rotate.');

// The new key is written down before any row is sealed with it: a crash after the commit must not
// lose the only key that opens them.
let stateFile = null;
const before = st ? { masterKey: st.masterKey, previousMasterKey: st.previousMasterKey } : null;
if (embedded) {
  stateFile = pg.saveMasterKey(newKey, staged ? previousEnv[0] : current);
}
if (!staged) {
  console.log(`New master key (keep it safe; it is shown once): ${newKey}`);
}

const sql = postgres(url, {
  max: 1,
  onnotice: () => {},
  // As connection settings, not statement text: they never reach pg_stat_activity or the server log.
  connection: { 'elygate.master_key': newKey, 'elygate.old_master_keys': oldKeys.join(',') },
});
let row;
try {
  [row] = await sql`select * from admin.master_key_rotate()`;
} catch (err) {
  if (stateFile) pg.saveMasterKey(before.masterKey, before.previousMasterKey);
  console.error(`Nothing was re-sealed: ${err.message}${err.hint ? `\n${err.hint}` : ''}`);
  process.exit(1);
} finally {
  await sql.end({ timeout: 5 });
}

console.log(
  `Re-sealed ${row.channel_keys} upstream key(s) and ${row.webhook_secrets} webhook secret(s) under master key ${row.new_key_id} ` +
    `(from ${row.old_key_ids.join(', ')}), in one transaction. The old key opens nothing any more.`,
);
if (embedded) {
  console.log(`
The embedded default's new key is saved in ${stateFile} (masterKey; the old one is kept as
previousMasterKey, accepted for opening only, for processes started before now).
Gateways that are running keep serving the channels they have already opened; restart
\`npm start\` (or \`npm run dev\`) so the gateway and the admin run with the new key.
\`npm run psql\` uses it already. Back up state.json: without the key, upstream keys are lost.`);
} else if (staged) {
  console.log(`
Every gateway and admin already runs with ELYGATE_MASTER_KEY=<the new key>. Now remove
ELYGATE_MASTER_KEY_PREVIOUS from their environment and restart them at leisure.`);
} else {
  console.log(`
Now, on every gateway and admin panel, set
  ELYGATE_MASTER_KEY=${newKey}
  ELYGATE_MASTER_KEY_PREVIOUS=${current}
and restart them one at a time (on SIGTERM each finishes its requests first). Until a gateway
restarts it keeps serving the channels it has already opened; one it opens for the first time
needs the new key. Once all run with the new key, remove ELYGATE_MASTER_KEY_PREVIOUS.
psql sessions that add channels: set elygate.master_key = '<the new key>'.
(For no dropped request on any channel, use the staged order: docs/operations.md.)`);
}
console.log(`Old key id(s): ${oldKeys.map(keyId).join(', ')}; new key id: ${keyId(newKey)}.`);
