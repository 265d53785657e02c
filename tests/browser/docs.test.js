// `GET /docs` in a real browser, offline: every request to another host is aborted and recorded,
// and the page must still render the API reference from vevee's own files.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { chromium } = require('playwright-core');

const BASE = process.env.VEVEE_URL;
const ARTIFACTS = process.env.VEVEE_ARTIFACTS || path.join(__dirname, 'artifacts');

let browser;

before(async () => {
  assert.ok(BASE, 'run through scripts/test.d/30-browser.sh');
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
});

after(async () => {
  await browser?.close();
});

test('the API reference renders every operation with no request to another host', async () => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const origin = new URL(BASE).origin;
  const elsewhere = [];
  await page.route('**/*', (route) => {
    const url = route.request().url();
    if (url.startsWith(origin) || url.startsWith('data:')) return route.continue();
    elsewhere.push(url);
    return route.abort();
  });
  const failed = [];
  page.on('requestfailed', (request) => failed.push(request.url()));

  await page.goto(`${BASE}/docs`);
  await page.locator('.opblock').first().waitFor({ timeout: 20_000 });
  assert.match(await page.locator('.info .title').innerText(), /vevee/);
  const document = await (await fetch(`${BASE}/openapi.json`)).json();
  const operations = Object.values(document.paths)
    .flatMap((item) => Object.keys(item))
    .filter((key) => ['get', 'put', 'post', 'delete', 'patch'].includes(key)).length;
  assert.equal(await page.locator('.opblock').count(), operations);
  await page.getByText('/v1/reservations/{id}/commit').first().waitFor();
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, 'docs.png'), fullPage: false });

  assert.deepEqual(elsewhere, [], 'requests to other hosts');
  assert.deepEqual(failed.filter((url) => !elsewhere.includes(url)), [], 'failed requests');
  await page.close();
});
