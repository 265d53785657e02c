// The dashboard in a real browser: Debian's Chromium driven by playwright-core, against the real
// `vevee serve` that scripts/test.d/30-browser.sh starts. Tests run in order and share one
// signed-in page, the way an operator would go through them.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { chromium } = require('playwright-core');

const BASE = process.env.VEVEE_URL;
const APP = process.env.VEVEE_APP;
const PASSWORD = process.env.VEVEE_PASSWORD;
const SECRET_TEST = process.env.VEVEE_SECRET_KEY_TEST;
const ARTIFACTS = process.env.VEVEE_ARTIFACTS || path.join(__dirname, 'artifacts');
const USER = 'u_browser';

let browser;
let context;
let page;

async function shot(name, target = page) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  await target.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: true });
}

async function api(method, route, body = undefined, key = SECRET_TEST) {
  const response = await fetch(`${BASE}${route}`, {
    method,
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: response.status, body: await response.json() };
}

async function text(selector) {
  return (await page.locator(selector).innerText()).replace(/\s+/g, ' ');
}

before(async () => {
  assert.ok(BASE && APP && PASSWORD && SECRET_TEST, 'run through scripts/test.d/30-browser.sh');
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
  context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  page = await context.newPage();
  page.setDefaultTimeout(10_000);
});

after(async () => {
  await browser?.close();
});

test('the dashboard asks for the password, refuses a wrong one slowly, and signs in', async () => {
  await page.goto(`${BASE}/dashboard/test/plans`);
  assert.match(page.url(), /\/dashboard\/sign-in$/, 'a page without a session goes to sign-in');
  await shot('01-sign-in');
  await page.getByLabel('App').fill(APP); // typed: the page does not list the apps
  await page.getByLabel('Dashboard password').fill('not-the-password');
  const started = Date.now();
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByText('That password is not right for this app.').waitFor();
  assert.ok(Date.now() - started >= 900, 'a wrong password is answered after a delay');
  await shot('02-sign-in-wrong-password');
  await page.getByLabel('Dashboard password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Plans & Credit Packs' }).waitFor();
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === 'vevee_dashboard');
  assert.ok(session, 'a session cookie is set');
  assert.equal(session.httpOnly, true);
  assert.equal(session.sameSite, 'Strict');
  assert.ok(session.expires > Date.now() / 1000, 'the session cookie expires');
  assert.ok(session.expires < Date.now() / 1000 + 9 * 3600, 'within hours, not never');
  await shot('03-plans-empty');
});

test('a plan is created through the plan form', async () => {
  await page.getByRole('link', { name: 'New plan' }).click();
  await page.getByLabel('Name', { exact: true }).fill('Pro');
  await page.getByLabel('Id', { exact: true }).fill('pro');
  await page.getByLabel('Price', { exact: true }).fill('9');
  await page.getByLabel('Billing interval').selectOption('month');
  await page.getByLabel('Limit id').fill('images');
  await page.getByLabel('Limit name').fill('Images');
  await page.getByLabel('Covers (patterns)').fill('image.*');
  await page.getByLabel('Amount per period').fill('40');
  await page.locator('#f-limit-0-unit').fill('count');
  await page.getByLabel('Period', { exact: true }).selectOption('month');
  await shot('04-plan-form');
  await page.getByRole('button', { name: 'Create plan' }).click();
  await page.locator('#plan-pro').waitFor();
  const card = await text('#plan-pro');
  assert.match(card, /\$9\.00 \/ month/);
  assert.match(card, /Images image\.\* 40 count month/);
  assert.match(card, /Active subscribers \(test and live\): 0/);
});

test('the Creator Bundle is created through the credit pack form and listed', async () => {
  await page.getByRole('link', { name: 'New credit pack' }).click();
  await page.getByRole('heading', { name: 'New credit pack' }).waitFor();
  await page.getByLabel('Name', { exact: true }).fill('Creator Bundle');
  await page.getByLabel('Id', { exact: true }).fill('cpk_creator_bundle');
  await page.getByLabel('Price', { exact: true }).fill('15');
  await page.getByLabel('After a number of days').check();
  await page.getByLabel('Days after the grant').fill('90');
  await page.locator('#f-item-0-match').fill('image.dall-e-3');
  await page.locator('#f-item-0-amount').fill('10');
  await page.locator('#f-item-0-unit').fill('count');
  await page.getByRole('button', { name: 'Add item' }).click();
  await page.locator('#f-item-1-match').waitFor();
  assert.equal(await page.locator('#f-item-0-match').inputValue(), 'image.dall-e-3', 'adding a row keeps what was typed');
  await page.locator('#f-item-1-match').fill('video.veo-3');
  await page.locator('#f-item-1-amount').fill('5');
  await page.locator('#f-item-1-unit').fill('seconds');
  // A third row added and removed again leaves the two items.
  await page.getByRole('button', { name: 'Add item' }).click();
  await page.locator('#f-item-2-match').waitFor();
  await page.getByRole('button', { name: 'Remove item 3' }).click();
  await page.locator('#f-item-2-match').waitFor({ state: 'detached' });
  await shot('05-pack-form-creator-bundle');
  await page.getByRole('button', { name: 'Create credit pack' }).click();
  await page.locator('#pack-cpk_creator_bundle').waitFor();
  const card = await text('#pack-cpk_creator_bundle');
  assert.match(card, /Creator Bundle/);
  assert.match(card, /\$15\.00/);
  assert.match(card, /Expires 90 days after the grant/);
  assert.match(card, /10 count of image\.dall-e-3/);
  assert.match(card, /5 seconds of video\.veo-3/);
  await shot('06-plans-and-packs');
  const { body } = await api('GET', '/v1/credit-packs/cpk_creator_bundle');
  assert.equal(body.price.amount, 1500);
  assert.equal(body.expiresInDays, 90);
  assert.deepEqual(
    body.items.map((i) => [i.match, i.amount, i.unit]),
    [['image.dall-e-3', 10, 'count'], ['video.veo-3', 5, 'seconds']],
  );
});

test('a bad item shows its error next to the field, keeps what was typed and creates nothing', async () => {
  await page.goto(`${BASE}/dashboard/test/packs/new`);
  await page.getByLabel('Name', { exact: true }).fill('Broken Pack');
  await page.getByLabel('Id', { exact: true }).fill('cpk_broken');
  await page.getByLabel('Price', { exact: true }).fill('5');
  await page.locator('#f-item-0-match').fill('image.dall-e-3');
  await page.locator('#f-item-0-amount').fill('0');
  await page.locator('#f-item-0-unit').fill('count');
  await page.getByRole('button', { name: 'Create credit pack' }).click();
  await page.locator('#item-0-amount-error').waitFor();
  assert.equal(await text('#item-0-amount-error'), 'Amount must be a positive integer');
  assert.equal(await page.getByLabel('Name', { exact: true }).inputValue(), 'Broken Pack');
  assert.equal(await page.locator('#f-item-0-amount').inputValue(), '0');
  assert.equal(await page.locator('#f-item-0-amount').getAttribute('aria-invalid'), 'true');
  await shot('07-pack-form-amount-zero');

  await page.locator('#f-item-0-amount').fill('3');
  await page.locator('#f-item-0-match').fill('Image/DALL-E 3');
  await page.getByRole('button', { name: 'Create credit pack' }).click();
  await page.locator('#item-0-match-error').waitFor();
  assert.match(await text('#item-0-match-error'), /^Model or category must be a model key like image\.dall-e-3/);
  assert.equal(await page.locator('#f-item-0-match').inputValue(), 'Image/DALL-E 3');
  await shot('08-pack-form-bad-model-key');

  const { status } = await api('GET', '/v1/credit-packs/cpk_broken');
  assert.equal(status, 404, 'nothing was created');
  await page.goto(`${BASE}/dashboard/test/plans`);
  assert.equal(await page.locator('#pack-cpk_broken').count(), 0);
});

test('a user is looked up, granted the bundle, and shows two balances', async () => {
  await page.getByRole('link', { name: 'Users' }).click();
  await page.getByLabel('User id').fill(USER);
  await page.getByRole('button', { name: 'Look up' }).click();
  await page.getByRole('heading', { name: `User ${USER}` }).waitFor();
  await page.getByText('No activity for this user in test mode yet.').waitFor();
  await page.getByLabel('Credit pack', { exact: true }).selectOption('cpk_creator_bundle');
  await page.getByLabel('Source', { exact: true }).selectOption('grant');
  await page.getByLabel('Notes', { exact: true }).fill('welcome gift');
  await page.getByRole('button', { name: 'Grant', exact: true }).click();
  await page.getByRole('heading', { name: 'Please confirm' }).waitFor();
  assert.match(await text('main'), /Grant Creator Bundle to u_browser in test mode/);
  await shot('09-grant-confirm');
  await page.getByRole('button', { name: 'Yes, grant' }).click();
  await page.getByRole('heading', { name: 'Done' }).waitFor();
  assert.equal(await page.locator('tr[data-type="credits.granted"]').count(), 2, 'the two ledger entries');
  await shot('10-grant-done');
  await page.getByRole('link', { name: `Back to user ${USER}` }).click();
  await page.locator('#balances').waitFor();
  assert.equal(await page.locator('#balances article.balance').count(), 2);
  const balances = await text('#balances');
  assert.match(balances, /10 of 10 count left/);
  assert.match(balances, /5 of 5 seconds left/);
  assert.match(balances, /welcome gift/);
  await shot('11-user-two-balances');
});

test('a balance is revoked with a reason and the revoke is in the ledger', async () => {
  const veo = page.locator('#balances article.balance', { hasText: 'video.veo-3' });
  await veo.getByRole('button', { name: 'Revoke' }).click();
  // Without a reason it is refused next to the field, and nothing happens.
  await page.getByText('Reason: say why the balance is revoked').waitFor();
  const again = page.locator('#balances article.balance', { hasText: 'video.veo-3' });
  await again.getByLabel('Reason for revoking').fill('refund requested by support');
  await again.getByRole('button', { name: 'Revoke' }).click();
  await page.getByRole('heading', { name: 'Please confirm' }).waitFor();
  await shot('12-revoke-confirm');
  await page.getByRole('button', { name: 'Yes, revoke' }).click();
  await page.getByRole('heading', { name: 'Done' }).waitFor();
  const entry = await text('tr[data-type="credits.revoked"]');
  assert.match(entry, /credits\.revoked 5 reason: refund requested by support/);
  await page.getByRole('link', { name: `Back to user ${USER}` }).click();
  await page.locator('#ledger').waitFor();
  assert.match(await text('#ledger tr[data-type="credits.revoked"]'), /refund requested by support/);
  assert.match(await text('#balances'), /revoked/);
  await shot('13-user-after-revoke');
});

test('the subscription is changed with confirmation and shows its counters', async () => {
  await page.getByLabel('Plan', { exact: true }).selectOption('pro');
  await page.getByRole('button', { name: 'Subscribe' }).click();
  await page.getByRole('button', { name: 'Yes, change plan' }).click();
  await page.getByRole('heading', { name: 'Done' }).waitFor();
  assert.equal(await page.locator('tr[data-type="subscription.updated"]').count(), 1);
  await page.getByRole('link', { name: `Back to user ${USER}` }).click();
  assert.match(await text('main'), /On Pro \(pro\)/);
  assert.match(await text('.counter'), /0 used of 40 count/);
  // Usage through the API shows up as counters, a pending reservation and the chart.
  const consumed = await api('POST', '/v1/consume', { userId: USER, model: 'image.dall-e-3', amount: 3 });
  assert.equal(consumed.body.status, 'committed');
  const held = await api('POST', '/v1/reservations', { userId: USER, model: 'image.flux', amount: 2 });
  assert.equal(held.body.status, 'pending');
  await page.reload();
  assert.match(await text('.counter'), /3 used of 40 count, 2 reserved/);
  assert.match(await text('section[aria-labelledby="pending-heading"]'), new RegExp(held.body.reservationId));
  assert.match(await text('figure.chart'), /image\.\* · 3 committed in 30 days/);
  assert.equal(await page.locator('figure.chart svg rect').count(), 30);
  await shot('13b-user-usage-and-chart');
});

test('the mode switch shows test and live data apart', async () => {
  assert.equal(await page.locator('body.test-mode').count(), 1);
  assert.match(await text('.mode-banner'), /TEST MODE/);
  await page.getByRole('navigation', { name: 'Mode' }).getByRole('link', { name: 'Live' }).click();
  await page.locator('body.live-mode').waitFor();
  assert.match(page.url(), /\/dashboard\/live\/users\?user=u_browser$/);
  assert.match(await text('.mode-banner'), /LIVE MODE/);
  assert.match(await text('#balances'), /No balances\./, 'the test grant is not in live mode');
  assert.match(await text('main'), /No subscription, ever\./);
  await shot('14-user-live-mode');
  // A grant in live mode stays in live mode.
  await page.getByLabel('Credit pack', { exact: true }).selectOption('cpk_creator_bundle');
  await page.getByLabel('Source', { exact: true }).selectOption('adjustment');
  await page.getByRole('button', { name: 'Grant', exact: true }).click();
  await page.getByRole('button', { name: 'Yes, grant' }).click();
  await page.getByRole('heading', { name: 'Done' }).waitFor();
  await page.getByRole('link', { name: `Back to user ${USER}` }).click();
  assert.equal(await page.locator('#balances article.balance').count(), 2);
  await page.getByRole('navigation', { name: 'Mode' }).getByRole('link', { name: 'Test' }).click();
  await page.locator('body.test-mode').waitFor();
  // Test mode still has its own two balances (one revoked), not the live ones.
  assert.equal(await page.locator('#balances article.balance').count(), 2);
  assert.equal(await page.locator('#balances article.balance.revoked').count(), 1);
  const testLedger = await api('GET', `/v1/users/${USER}/ledger`);
  assert.ok(testLedger.body.data.every((e) => e.source !== 'adjustment'), 'no live grant in test');
});

test('the pages are usable at a phone width', async () => {
  const phone = await context.newPage();
  await phone.setViewportSize({ width: 390, height: 844 });
  await phone.goto(`${BASE}/dashboard/test/plans`);
  await shot('15-phone-plans', phone);
  await phone.goto(`${BASE}/dashboard/test/users?user=${USER}`);
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `no sideways scrolling (${overflow}px)`);
  await shot('16-phone-user', phone);
  await phone.close();
});

test('a request without the session cookie or without the CSRF token is refused', async () => {
  const form = {
    name: 'Sneaky', id: 'cpk_sneaky', price: '1', currency: 'usd', expires: 'never',
    item_id: '', item_match: 'image.*', item_amount: '1', item_unit: 'count', op: 'save',
  };
  const url = `${BASE}/dashboard/test/packs/new`;
  // No cookie at all: a fresh request context has none.
  const { request } = require('playwright-core');
  const anonymous = await request.newContext();
  const page1 = await anonymous.get(`${BASE}/dashboard/test/users?user=${USER}`, { maxRedirects: 0 });
  assert.equal(page1.status(), 303);
  assert.equal(page1.headers().location, '/dashboard/sign-in');
  const post1 = await anonymous.post(url, { form, maxRedirects: 0 });
  assert.equal(post1.status(), 401);
  await anonymous.dispose();
  // With the session cookie but no CSRF token, or a wrong one.
  const cookie = (await context.cookies()).find((c) => c.name === 'vevee_dashboard');
  const headers = { cookie: `vevee_dashboard=${cookie.value}` };
  const signed = await request.newContext();
  const post2 = await signed.post(url, { form, headers, maxRedirects: 0 });
  assert.equal(post2.status(), 403);
  const refusedPage = await post2.text();
  const post3 = await signed.post(url, { form: { ...form, csrf: 'f'.repeat(64) }, headers, maxRedirects: 0 });
  assert.equal(post3.status(), 403);
  const grant = await signed.post(`${BASE}/dashboard/test/users/${USER}/grant`, {
    form: { pack: 'cpk_creator_bundle', source: 'grant', external_ref: 'sneaky', confirm: 'yes' },
    headers,
    maxRedirects: 0,
  });
  assert.equal(grant.status(), 403);
  // A forged session cookie is no session.
  const forged = await signed.get(`${BASE}/dashboard/test/plans`, {
    headers: { cookie: `vevee_dashboard=${cookie.value.replace(/\|[0-9a-f]+$/, '|' + '0'.repeat(64))}` },
    maxRedirects: 0,
  });
  assert.equal(forged.status(), 303);
  await signed.dispose();
  assert.equal((await api('GET', '/v1/credit-packs/cpk_sneaky')).status, 404);
  const ledger = await api('GET', `/v1/users/${USER}/ledger`);
  assert.ok(ledger.body.data.every((e) => e.externalRef !== 'sneaky'));
  const refused = await context.newPage();
  await refused.goto(`${BASE}/dashboard/test/plans`);
  await refused.setContent(refusedPage);
  await shot('17-csrf-refused', refused);
  await refused.close();
});

test('signing out ends the session', async () => {
  await page.goto(`${BASE}/dashboard/test/plans`);
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByRole('heading', { name: 'Sign in to the vevee dashboard' }).waitFor();
  await page.goto(`${BASE}/dashboard/test/plans`);
  assert.match(page.url(), /\/dashboard\/sign-in$/);
});
