// `npm run key -- <username> [key name]`: creates the user if needed and prints a new API key.
// Uses DATABASE_URL, or the embedded database's superuser.
import postgres from 'postgres';

const [username, name = 'cli'] = process.argv.slice(2);
if (!username) {
  console.error('usage: npm run key -- <username> [key name]');
  process.exit(2);
}
let url = process.env.DATABASE_URL;
if (!url) {
  const { readState } = await import('./pg.mjs');
  const st = readState();
  if (!st) {
    console.error('No database yet: run `npm start` first (or set DATABASE_URL).');
    process.exit(1);
  }
  url = st.url;
}
const sql = postgres(url, { max: 1, onnotice: () => {} });
try {
  const [exists] = await sql`select 1 from admin.users where username = ${username}`;
  if (!exists) await sql`select admin.user_create(${sql.json({ username })})`;
  const [{ k }] = await sql`select admin.key_create(${sql.json({ username, name })}) as k`;
  console.log(`API key for ${username} (shown once, keep it): ${k.key}`);
  console.log(`Try it: curl http://localhost:${process.env.PORT || 3000}/v1/models -H "Authorization: Bearer ${k.key}"`);
} catch (err) {
  console.error(`Could not create the key: ${err.message}`);
  process.exitCode = 1;
} finally {
  await sql.end({ timeout: 5 });
}
