// `npm run key -- <username> [--name NAME] [--credit USD]`: creates the user if needed, optionally
// tops up their wallet, and prints a new API key. Uses DATABASE_URL, or the embedded database.
import postgres from 'postgres';

const args = process.argv.slice(2);
const username = args.find((a, i) => !a.startsWith('--') && !(args[i - 1] ?? '').startsWith('--'));
const flag = (name) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
};
if (!username) {
  console.error('usage: npm run key -- <username> [--name NAME] [--credit USD]');
  process.exit(2);
}
const name = flag('name') ?? 'cli';
const credit = flag('credit');
if (credit !== undefined && !(Number(credit) > 0)) {
  console.error('--credit takes a positive amount in USD, e.g. --credit 5');
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
  if (credit !== undefined) {
    const [{ c }] = await sql`select admin.wallet_credit(${sql.json({ username, amount_micros: Math.round(Number(credit) * 1e6), note: 'npm run key' })}) as c`;
    console.log(`Wallet of ${username}: ${(c.balance_micros / 1e6).toFixed(6)} USD`);
  }
  const [{ k }] = await sql`select admin.key_create(${sql.json({ username, name })}) as k`;
  console.log(`API key for ${username} (shown once, keep it): ${k.key}`);
  console.log(`Try it: curl http://localhost:${process.env.PORT || 3000}/v1/models -H "Authorization: Bearer ${k.key}"`);
} catch (err) {
  console.error(`Could not create the key: ${err.message}`);
  process.exitCode = 1;
} finally {
  await sql.end({ timeout: 5 });
}
