// Browser tests of the Tollgate console: playwright-core drives Debian's
// chromium (never a downloaded browser) against a real billing process,
// redis-server and stripe-mock started by test/e2e (go test, TOLLGATE_E2E=1).
// Screenshots land in OUT_DIR for a person to look at.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const BILLING = need('BILLING_URL');
const HELPER = need('HELPER_URL');
const ADMIN = need('ADMIN_TOKEN');
const OUT = need('OUT_DIR');
const EXE = process.env.CHROMIUM || '/usr/bin/chromium';
const ACCOUNT = 'cust_e2e_' + Date.now().toString(36);
const HOSTILE = '<img src=x onerror=alert(1)>';

function need(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run through make e2e`);
  return v;
}

const steps = [];
async function step(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    steps.push(name);
    console.log(`ok   ${name} (${Date.now() - t0} ms)`);
  } catch (err) {
    console.log(`FAIL ${name}: ${err.stack || err}`);
    throw err;
  }
}

async function helper(path, body) {
  const res = await fetch(HELPER + path, body === undefined ? {} : { method: 'POST', body: JSON.stringify(body) });
  const text = await res.text();
  if (!res.ok) throw new Error(`helper ${path}: ${res.status} ${text}`);
  return text;
}

async function api(path, token, init = {}) {
  const res = await fetch(BILLING + path, { ...init, headers: { Authorization: 'Bearer ' + token, ...(init.headers || {}) } });
  const text = await res.text();
  assert.ok(res.ok, `${path}: ${res.status} ${text}`);
  return text;
}

// rawNumber reads a JSON number's text as the API wrote it ("12.345").
function rawNumber(text, field) {
  const m = new RegExp(`"${field}":(-?[0-9.]+)`).exec(text);
  assert.ok(m, `${field} in ${text}`);
  return m[1];
}

const grouped = (s) => s.replace(/^(-?)(\d+)/, (_, sign, d) => sign + d.replace(/\B(?=(\d{3})+(?!\d))/g, ','));

const profile = mkdtempSync(join(tmpdir(), 'tollgate-e2e-profile-'));
mkdirSync(OUT, { recursive: true });
const context = await chromium.launchPersistentContext(profile, {
  executablePath: EXE,
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--no-first-run'],
  viewport: { width: 1280, height: 900 },
  deviceScaleFactor: 1,
});
// Generous waits: CI shares its cores; a step still fails when the page never gets there.
context.setDefaultTimeout(60000);
context.setDefaultNavigationTimeout(90000);
await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: BILLING });

// Every response and console message of the whole run, to check that nothing
// failed: no page expects a failure (a member is shown only what its role may
// use, so not even a 403 is allowed).
const failures = [];
const requestURLs = [];
const dialogs = [];
function watch(page) {
  const fail = (what) => failures.push(what);
  page.on('response', (r) => {
    if (r.status() >= 400) fail(`${r.status()} ${r.request().method()} ${r.url()}`);
  });
  page.on('request', (r) => requestURLs.push(r.url()));
  page.on('console', (m) => { if (m.type() === 'error') fail('console: ' + m.text()); });
  page.on('pageerror', (e) => failures.push('page error: ' + e.message));
  page.on('dialog', (d) => { dialogs.push(d.message()); d.dismiss().catch(() => {}); });
  return page;
}
// Stripe's hosted Checkout is not reachable here: answer it with a stand-in page.
await context.route('https://checkout.stripe.com/**', (route) => route.fulfill({
  status: 200, contentType: 'text/html', body: '<!doctype html><title>Stripe Checkout</title><h1>Stripe Checkout (stand-in)</h1>',
}));

let exitCode = 0;
try {
  const token = (await helper('/token?sub=' + ACCOUNT)).trim();
  const page = watch(context.pages()[0] || await context.newPage());

  await step('GET /console/ is HTML with a strict CSP; /openapi.json is OpenAPI 3', async () => {
    const res = await fetch(BILLING + '/console/');
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /text\/html/);
    const csp = res.headers.get('content-security-policy');
    assert.match(csp, /script-src 'self'/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
    assert.match(csp, new RegExp(`frame-ancestors ${BILLING.replace(/[.]/g, '\\.')}`));
    const doc = await (await fetch(BILLING + '/openapi.json')).json();
    assert.match(doc.openapi, /^3\./);
  });

  await step('handoff shows the balance the API reports, and drops the token from the address bar', async () => {
    await page.goto(`${BILLING}/console/#token=${encodeURIComponent(token)}`);
    const credits = await api('/api/billing/credits?limit=1', token);
    const want = grouped(rawNumber(credits, 'balance'));
    await page.getByTestId('balance').filter({ hasText: want }).waitFor();
    assert.equal(new URL(page.url()).hash, '#overview');
    assert.ok(!page.url().includes(token));
    await page.getByRole('link', { name: 'Overview' }).waitFor();
    await page.getByText('You are out of credits').waitFor();
  });

  await step('operator grants credits (admin token sign-in)', async () => {
    const op = watch(await context.newPage());
    await op.goto(`${BILLING}/console/`);
    await op.getByLabel('Admin token').fill(ADMIN);
    await op.getByRole('button', { name: 'Sign in' }).click();
    await op.getByLabel('Account id').fill(ACCOUNT);
    await op.getByRole('button', { name: 'Find account' }).click();
    await op.getByTestId('op-balance').filter({ hasText: '0.000' }).waitFor();
    await op.getByLabel('Credits', { exact: true }).fill('1500.5');
    await op.getByLabel('Reference').fill('e2e-grant-1');
    await op.getByLabel('Description (optional)').fill('Welcome credits');
    await op.getByRole('button', { name: 'Grant credits' }).click();
    await op.getByText('Applied. New balance: 1,500.500 credits.').waitFor();
    await op.getByTestId('op-balance').filter({ hasText: '1,500.500' }).waitFor();
    await op.getByRole('cell', { name: 'admin:e2e-grant-1' }).waitFor();
    // The same reference again credits nothing.
    await op.getByRole('button', { name: 'Grant credits' }).click();
    await op.getByText('Reference already used').waitFor();
    await op.screenshot({ path: join(OUT, 'operator-account.png'), fullPage: true });
    await op.close();
  });

  await step('a key is created with a credit limit, copied and revoked', async () => {
    await page.reload();
    await page.getByTestId('balance').filter({ hasText: '1,500.500' }).waitFor();
    await page.getByRole('link', { name: 'API keys' }).click();
    await page.getByText('No API keys yet').waitFor();
    await page.getByLabel('Name').fill('ci server');
    await page.getByLabel('Credit limit (optional)').fill('250');
    await page.getByRole('button', { name: 'Create key' }).click();
    const secret = (await page.getByTestId('new-key').textContent()).trim();
    assert.match(secret, /^tg-/);
    await page.getByRole('button', { name: 'Copy the new key' }).click();
    await page.getByText('Key copied to the clipboard').waitFor();
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), secret);
    const row = page.getByRole('row').filter({ hasText: 'ci server' });
    await row.getByText('250.000').waitFor();
    await page.screenshot({ path: join(OUT, 'keys-created.png'), fullPage: true });
    await row.getByRole('button', { name: 'Revoke key ci server' }).click();
    await page.getByRole('dialog').getByRole('button', { name: 'Revoke key' }).click();
    await row.getByText('Revoked').waitFor();
    const keys = JSON.parse(await api('/v1/keys', token));
    assert.equal(keys.data.length, 1);
    assert.equal(keys.data[0].revoked, true);
  });

  await step('a hostile key name renders as text', async () => {
    await page.getByLabel('Name').fill(HOSTILE);
    await page.getByRole('button', { name: 'Create key' }).click();
    await page.getByRole('row').filter({ hasText: HOSTILE }).waitFor();
    assert.equal(await page.locator('main img').count(), 0);
    assert.equal(await page.locator('.keyname', { hasText: HOSTILE }).first().textContent(), HOSTILE);
    assert.deepEqual(dialogs, []);
    await page.screenshot({ path: join(OUT, 'keys-hostile-name.png'), fullPage: true });
  });

  let session = '';
  let pack = null;
  await step('a pack purchase shows the fee and reaches a Checkout URL from stripe-mock', async () => {
    await page.getByRole('link', { name: 'Buy credits' }).click();
    const packs = JSON.parse(await (await fetch(BILLING + '/v1/billing/packs')).text()).data;
    pack = packs.find((p) => p.key === 'growth') || packs[0];
    await page.getByText(/processing fee/).first().waitFor();
    await page.screenshot({ path: join(OUT, 'buy-credits.png'), fullPage: true });
    // Read the checkout answer on its way to the page (the page leaves at once).
    let body = null;
    await page.route('**/v1/billing/checkout', async (route) => {
      const res = await route.fetch();
      body = await res.json();
      await route.fulfill({ response: res });
    });
    await page.getByRole('button', { name: `Buy ${pack.name}` }).click();
    await page.waitForURL(/^https:\/\/checkout\.stripe\.com\//);
    await page.unroute('**/v1/billing/checkout');
    session = body.id;
    assert.ok(session, 'a checkout session id');
    assert.equal(page.url(), body.url);
  });

  await step('a signed webhook later shows the new balance and the purchase in the history', async () => {
    await helper('/paid', { account: ACCOUNT, session, pack: pack.key, amount: pack.price_minor, currency: pack.currency });
    await page.goto(`${BILLING}/console/?billing=success#overview`);
    await page.getByText('Thank you — payment received.').waitFor();
    const want = grouped(rawNumber(await api('/api/billing/credits?limit=1', token), 'balance'));
    assert.equal(want, '2,375,550.500');
    await page.getByTestId('balance').filter({ hasText: want }).waitFor();
    assert.ok(!page.url().includes('billing=success'));
    await page.screenshot({ path: join(OUT, 'overview-after-purchase.png'), fullPage: true });
    await page.getByRole('link', { name: 'History' }).click();
    await page.getByRole('region', { name: 'Purchases' }).getByText('2,374,050.000').waitFor();
    await page.getByRole('region', { name: 'Transactions' }).getByText('1,500.500').waitFor();
    await page.screenshot({ path: join(OUT, 'history.png'), fullPage: true });
  });

  await step("the operator sees the purchase's webhook deliveries: one delivered, one retried after a 500", async () => {
    const op = watch(await context.newPage());
    await op.goto(`${BILLING}/console/`);
    await op.getByLabel('Admin token').fill(ADMIN);
    await op.getByRole('button', { name: 'Sign in' }).click();
    const list = op.getByRole('region', { name: 'Webhook deliveries' });
    const ok = list.getByRole('row').filter({ hasText: '/hooks/ok' }).filter({ hasText: ACCOUNT });
    const down = list.getByRole('row').filter({ hasText: '/hooks/down' }).filter({ hasText: ACCOUNT });
    // The dispatcher sends within a second or so: refresh until both show.
    const deadline = Date.now() + 30000;
    for (;;) {
      await op.getByRole('button', { name: 'Refresh webhook deliveries' }).waitFor();
      if (await ok.filter({ hasText: 'delivered' }).count() && await down.filter({ hasText: 'endpoint answered 500' }).count()) break;
      assert.ok(Date.now() < deadline, 'both deliveries within 30 s: ' + await op.locator('main').innerText());
      await op.waitForTimeout(500);
      await op.getByRole('button', { name: 'Refresh webhook deliveries' }).click();
    }
    await ok.getByText('credits.purchased').waitFor();
    await down.getByText('pending').waitFor();
    assert.match(await down.locator('td[data-label="Next attempt"]').innerText(), /\d{4}/);
    assert.equal(await down.locator('td[data-label="Last result"] .mono').innerText(), '500');
    // The endpoint's URL (the operator's config) is text, never markup.
    assert.match(await down.locator('td[data-label="Endpoint"]').innerText(), /\/hooks\/down\?note=<b>hostile<\/b>$/);
    assert.equal(await op.locator('main b').count(), 0);
    // What the console shows is what the admin API says.
    const listed = JSON.parse(await api('/admin/v1/webhooks/deliveries?limit=50', ADMIN));
    const mine = listed.data.filter((d) => d.account === ACCOUNT);
    assert.deepEqual(mine.map((d) => d.type), ['credits.purchased', 'credits.purchased']);
    await op.screenshot({ path: join(OUT, 'operator-webhooks.png'), fullPage: true });
    // A delivery's account opens in the finder.
    await ok.getByRole('button', { name: `Open account ${ACCOUNT}` }).click();
    await op.getByTestId('op-balance').filter({ hasText: grouped(rawNumber(await api('/api/billing/credits?limit=1', token), 'balance')) }).waitFor();
    await op.close();
  });

  await step('auto-recharge is edited', async () => {
    await page.getByRole('link', { name: 'Overview' }).click();
    await page.getByLabel('Recharge automatically when my balance runs low').check();
    await page.getByLabel('When the balance falls below (credits)').fill('1000');
    await page.getByRole('button', { name: 'Save' }).click();
    await page.getByText('Auto-recharge is on').waitFor();
    const cr = await api('/api/billing/credits?limit=1', token);
    assert.match(cr, /"enabled":true/);
    assert.equal(rawNumber(cr, 'threshold'), '1000.000');
  });

  await step('the usage chart draws with data, and the table sums per model', async () => {
    await helper('/usage', { account: ACCOUNT });
    await page.getByRole('link', { name: 'Usage' }).click();
    await page.locator('svg.chart rect').first().waitFor();
    assert.ok(await page.locator('svg.chart rect').count() >= 3);
    const row = page.getByRole('row').filter({ hasText: 'claude-sonnet' });
    await row.getByText('19.600').waitFor();
    await page.getByRole('radio', { name: 'Tokens' }).click();
    await page.locator('svg.chart[aria-label^="Tokens"]').waitFor();
    await page.getByRole('radio', { name: 'Credits' }).click();
    await page.screenshot({ path: join(OUT, 'usage.png'), fullPage: true });
  });

  await step('the plan view shows usage against limits', async () => {
    await page.getByRole('link', { name: 'Plan' }).click();
    await page.getByText('No plan').waitFor();
    await page.getByText('Requests', { exact: true }).waitFor();
    await page.screenshot({ path: join(OUT, 'plan.png'), fullPage: true });
  });

  await step('a promotional code is redeemed and its credits shown apart', async () => {
    const code = 'E2E-' + ACCOUNT.toUpperCase().replace(/[^A-Z0-9]/g, '');
    await api('/admin/v1/promo-codes', ADMIN, { method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ code, credits: 250, grant_expires_in: '720h' }) });
    const before = rawNumber(await api('/api/billing/credits?limit=1', token), 'balance');
    await page.getByRole('link', { name: 'Buy credits' }).click();
    await page.getByLabel('Promotional code').fill(code);
    await page.getByRole('button', { name: 'Redeem' }).click();
    await page.getByText('250.000 promotional credits added.').waitFor();
    const after = rawNumber(await api('/api/billing/credits?limit=1', token), 'balance');
    assert.equal(Math.round(Number(after) * 1000) - Math.round(Number(before) * 1000), 250000);
    await page.getByText(`New balance: ${grouped(after)} credits.`).waitFor();
    await page.getByText(/The promotional credits expire on/).waitFor();
    await page.screenshot({ path: join(OUT, 'redeem.png'), fullPage: true });
    await page.getByRole('link', { name: 'Overview' }).click();
    await page.getByTestId('balance').filter({ hasText: grouped(after) }).waitFor();
    await page.getByTestId('promotional').filter({ hasText: '250.000' }).waitFor();
  });

  const MATE = 'e2e-mate-' + Date.now().toString(36);
  await step('an owner adds a member, sees it and the audit entry', async () => {
    await page.getByRole('link', { name: 'Team' }).click();
    const members = page.getByRole('region', { name: 'Team members' });
    await members.getByRole('row').filter({ hasText: ACCOUNT }).getByText('owner').waitFor();
    // The only owner has no Remove button (the API would refuse).
    assert.equal(await members.getByRole('button', { name: `Remove member ${ACCOUNT}` }).count(), 0);
    await page.getByLabel('User id').fill(MATE);
    await page.getByLabel('Role').selectOption('member');
    await page.getByRole('button', { name: 'Add member' }).click();
    await page.getByText(`${MATE} added as member`).waitFor();
    await members.getByRole('row').filter({ hasText: MATE }).getByLabel(`Role of ${MATE}`).waitFor();
    assert.equal(await members.getByLabel(`Role of ${MATE}`).inputValue(), 'member');
    const audit = page.getByRole('region', { name: 'Audit log entries' });
    await audit.getByRole('row').filter({ hasText: 'member.added' }).filter({ hasText: MATE }).waitFor();
    const listed = JSON.parse(await api('/v1/members', token)).data;
    assert.deepEqual(listed.map((m) => [m.user, m.role]).sort(), [[ACCOUNT, 'owner'], [MATE, 'member']].sort());
    await page.screenshot({ path: join(OUT, 'team.png'), fullPage: true });
  });

  await step("the owner changes a member's role and sets the member's budget", async () => {
    const members = page.getByRole('region', { name: 'Team members' });
    const row = members.getByRole('row').filter({ hasText: MATE });
    // The role select, confirmed from the keyboard (the dialog focuses its button).
    await row.getByLabel(`Role of ${MATE}`).selectOption('billing');
    const confirm = page.getByRole('dialog');
    await confirm.getByText('also buys credits').waitFor();
    await page.keyboard.press('Enter');
    await page.getByText(`${MATE} is now billing`).waitFor();
    await page.getByRole('region', { name: 'Audit log entries' }).getByRole('row').filter({ hasText: 'member.updated' }).filter({ hasText: MATE }).waitFor();
    let listed = JSON.parse(await api('/v1/members', token)).data;
    assert.equal(listed.find((m) => m.user === MATE).role, 'billing');
    // Cancelled: nothing changes, the select shows the role again.
    await row.getByLabel(`Role of ${MATE}`).selectOption('admin');
    await page.getByRole('dialog').getByRole('button', { name: 'Cancel' }).click();
    await page.getByRole('dialog').waitFor({ state: 'detached' });
    await page.waitForFunction((u) => document.querySelector(`select[data-user="${u}"]`).value === 'billing', MATE);
    // Back to a plain member for the next step.
    await row.getByLabel(`Role of ${MATE}`).selectOption('member');
    await page.getByRole('dialog').getByRole('button', { name: 'Change role' }).click();
    await page.getByText(`${MATE} is now member`).waitFor();
    // The budget: opened from the keyboard, a bad amount refused in place.
    await row.getByRole('button', { name: `Set budget of ${MATE}` }).focus();
    await page.keyboard.press('Enter');
    const dlg = page.getByRole('dialog', { name: `Budget of ${MATE}` });
    await dlg.getByLabel('Credits per period').fill('0');
    await dlg.getByRole('button', { name: 'Save budget' }).click();
    await dlg.getByText('greater than zero').waitFor();
    await dlg.getByLabel('Credits per period').fill('25.5');
    await dlg.getByLabel('Period', { exact: true }).selectOption('week');
    await dlg.getByLabel('Credits per period').press('Enter');
    await dlg.waitFor({ state: 'detached' });
    await row.getByText('25.500 / week').waitFor();
    listed = JSON.parse(await api('/v1/members', token)).data;
    const mate = listed.find((m) => m.user === MATE);
    assert.equal(mate.role, 'member');
    assert.deepEqual(mate.budget, { credits: 25.5, period: 'week' });
    assert.match(await row.locator('td[data-label="Used this period"]').innerText(), /^0\.000$/);
    // The only owner's role cannot be changed (the API would refuse): no select.
    assert.equal(await members.getByLabel(`Role of ${ACCOUNT}`).count(), 0);
    await page.screenshot({ path: join(OUT, 'team-budget.png'), fullPage: true });
  });

  await step('a plain member sees no buy, history, team or plan controls, and meets no 403', async () => {
    const mateToken = (await helper(`/token?sub=${MATE}&account=${ACCOUNT}`)).trim();
    const mp = watch(await context.newPage());
    const asked = [];
    mp.on('request', (r) => asked.push(new URL(r.url()).pathname));
    await mp.goto(`${BILLING}/console/#token=${encodeURIComponent(mateToken)}`);
    await mp.getByTestId('balance').waitFor();
    const me = JSON.parse(await api('/v1/me', mateToken));
    assert.deepEqual([me.user, me.account, me.role], [MATE, ACCOUNT, 'member']);
    await mp.getByText(`${MATE} · member of ${ACCOUNT}`).waitFor();
    // The balance is every member's; the auto-recharge setting is billing's.
    await mp.getByText('Auto-recharge is managed by the account’s owners, admins and billing members.').waitFor();
    assert.equal(await mp.getByLabel('Recharge automatically when my balance runs low').count(), 0);
    const tabs = await mp.getByRole('navigation', { name: 'Sections' }).getByRole('link').allInnerTexts();
    assert.deepEqual(tabs, ['Overview', 'Usage', 'API keys', 'Plan']);
    await mp.getByRole('link', { name: 'Plan' }).click();
    await mp.getByText('choose and pay for its plan').waitFor();
    assert.equal(await mp.getByRole('button', { name: /Manage billing|Subscribe|Cancel plan/ }).count(), 0);
    await mp.getByRole('link', { name: 'API keys' }).click();
    await mp.getByRole('button', { name: 'Create key' }).waitFor();
    // A section the role may not see is not routed to, even by its address.
    for (const hidden of ['buy', 'history', 'team']) {
      await mp.getByRole('link', { name: 'Usage' }).click();
      await mp.waitForFunction(() => document.title.startsWith('Usage'));
      await mp.goto(`${BILLING}/console/#${hidden}`);
      await mp.waitForFunction(() => document.title.startsWith('Overview'));
      await mp.getByTestId('balance').waitFor();
      assert.equal(await mp.getByRole('button', { name: /^Buy |Add member|Redeem/ }).count(), 0, hidden);
    }
    assert.equal(await mp.locator('main [role="alert"]').count(), 0);
    for (const p of ['/v1/members', '/v1/audit', '/v1/billing/history', '/v1/billing/checkout', '/api/billing/credits/auto-recharge']) {
      assert.ok(!asked.includes(p), `the member's console asked for ${p}`);
    }
    await mp.setViewportSize({ width: 375, height: 800 });
    const overflow = await mp.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the member's page is ${overflow}px wider than the phone`);
    await mp.screenshot({ path: join(OUT, 'member-overview.png'), fullPage: true });
    await mp.close();
  });

  await step("an admin manages members but not the owner: no select, budget or remove on the owner's row", async () => {
    const ADMIN_MATE = 'e2e-admin-' + Date.now().toString(36);
    await api('/v1/members', token, { method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ user: ADMIN_MATE, role: 'admin' }) });
    const adminToken = (await helper(`/token?sub=${ADMIN_MATE}&account=${ACCOUNT}`)).trim();
    const ap = watch(await context.newPage());
    await ap.goto(`${BILLING}/console/#token=${encodeURIComponent(adminToken)}`);
    await ap.getByTestId('balance').waitFor();
    await ap.getByRole('link', { name: 'Team' }).click();
    const members = ap.getByRole('region', { name: 'Team members' });
    const ownerRow = members.getByRole('row').filter({ hasText: ACCOUNT });
    await ownerRow.getByText('owner', { exact: true }).waitFor();
    assert.equal(await ownerRow.getByRole('combobox').count(), 0);
    assert.equal(await ownerRow.getByRole('button').count(), 0);
    // The member's row is the admin's to change, but never to owner.
    const mateRole = members.getByLabel(`Role of ${MATE}`);
    await mateRole.waitFor();
    assert.deepEqual(await mateRole.locator('option').allInnerTexts(), ['Member', 'Billing', 'Admin']);
    assert.deepEqual(await ap.getByLabel('Role', { exact: true }).locator('option').allInnerTexts(), ['Member', 'Billing', 'Admin']);
    await members.getByRole('button', { name: `Edit budget of ${MATE}` }).waitFor();
    await ap.getByRole('region', { name: 'Audit log entries' }).waitFor();
    await ap.close();
    await api('/v1/members/' + ADMIN_MATE, token, { method: 'DELETE' });
  });

  await step('the owner removes the member, and the audit log says so', async () => {
    const members = page.getByRole('region', { name: 'Team members' });
    await members.getByRole('button', { name: `Remove member ${MATE}` }).click();
    await page.getByRole('dialog').getByRole('button', { name: 'Remove member' }).click();
    await page.getByText(`${MATE} removed`).waitFor();
    await members.getByRole('row').filter({ hasText: MATE }).waitFor({ state: 'detached' });
    await page.getByRole('region', { name: 'Audit log entries' }).getByRole('row').filter({ hasText: 'member.removed' }).filter({ hasText: MATE }).waitFor();
    const listed = JSON.parse(await api('/v1/members', token)).data;
    assert.deepEqual(listed.map((m) => m.user), [ACCOUNT]);
  });

  await step('keyboard: tabs are reachable and followed with Enter', async () => {
    await page.getByRole('link', { name: 'Overview' }).focus();
    await page.keyboard.press('Tab');
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { name: 'Buy credits', level: 2 }).waitFor();
  });

  await step('fits a 375 px phone', async () => {
    await page.setViewportSize({ width: 375, height: 800 });
    await page.getByRole('link', { name: 'Overview' }).click();
    await page.getByTestId('balance').waitFor();
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `page is ${overflow}px wider than the phone`);
    await page.screenshot({ path: join(OUT, 'phone-overview.png'), fullPage: true });
    await page.getByRole('link', { name: 'API keys' }).click();
    await page.getByRole('row').filter({ hasText: HOSTILE }).waitFor();
    const overflowKeys = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflowKeys <= 0, `keys page is ${overflowKeys}px wider than the phone`);
    await page.screenshot({ path: join(OUT, 'phone-keys.png'), fullPage: true });
    // A member row with a role select, a budget and its buttons.
    const PHONE_MATE = 'e2e-phone-' + Date.now().toString(36);
    await api('/v1/members', token, { method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ user: PHONE_MATE, role: 'billing', budget: { credits: '1234567.5', period: 'month' } }) });
    await page.getByRole('link', { name: 'Team' }).click();
    await page.getByRole('region', { name: 'Audit log entries' }).waitFor();
    await page.getByText('1,234,567.500 / month').waitFor();
    const overflowTeam = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflowTeam <= 0, `team page is ${overflowTeam}px wider than the phone`);
    await page.screenshot({ path: join(OUT, 'phone-team.png'), fullPage: true });
    // The budget dialog fits too, and Esc closes it with nothing changed.
    await page.getByRole('button', { name: `Edit budget of ${PHONE_MATE}` }).click();
    const dlg = page.getByRole('dialog', { name: `Budget of ${PHONE_MATE}` });
    assert.equal(await dlg.getByLabel('Credits per period').inputValue(), '1234567.500');
    const box = await dlg.boundingBox();
    assert.ok(box.x >= 0 && box.x + box.width <= 375, `the dialog spans ${box.x}..${box.x + box.width}`);
    await page.screenshot({ path: join(OUT, 'phone-budget.png') });
    await page.keyboard.press('Escape');
    await dlg.waitFor({ state: 'detached' });
  });

  await step('no request failed (not even a 403), no console error, and the token never appeared in a URL', async () => {
    assert.deepEqual(failures, []);
    const leaked = requestURLs.filter((u) => u.includes(token));
    assert.deepEqual(leaked, []);
    assert.deepEqual(dialogs, []);
  });
} catch (err) {
  exitCode = 1;
  try {
    for (const p of context.pages()) await p.screenshot({ path: join(OUT, `failure-${context.pages().indexOf(p)}.png`), fullPage: true });
  } catch { /* the browser may be gone */ }
  if (failures.length) console.log('failed requests and console errors:\n  ' + failures.join('\n  '));
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(`${steps.length} steps passed; screenshots in ${OUT}`);
process.exit(exitCode);
