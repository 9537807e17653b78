// Drives the quota admin page in headless Chromium (playwright-core + Debian chromium).
// Input: one JSON argument {hubUrl, serviceUrl, admin, target, xss, artifacts}. Output: one JSON line.
const { chromium } = require(require('path').join(process.cwd(), 'node_modules', 'playwright-core'));

(async () => {
  const cfg = JSON.parse(process.argv[2]);
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
           '--disable-sync', '--no-first-run'],
  });
  const out = { dialogs: [], consoleErrors: [] };
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    page.on('dialog', async (d) => { out.dialogs.push(d.message()); await d.dismiss(); });
    await page.goto(`${cfg.hubUrl}/hub/login?next=${encodeURIComponent(new URL(cfg.serviceUrl).pathname)}`);
    await page.fill('#username_input', cfg.admin);
    await page.fill('#password_input', 'any');
    await Promise.all([page.waitForURL((u) => u.toString().startsWith(cfg.serviceUrl)), page.click('#login_submit')]);
    await page.waitForSelector('#policy-form');

    // the admin sets a limit for a user, and a group policy whose name is hostile markup
    for (const [kind, name, gpus] of [['user', cfg.target, '3'], ['group', cfg.xss, '1']]) {
      await page.selectOption('#kind', kind);
      await page.fill('#name', name);
      await page.fill('#max_gpus', gpus);
      await Promise.all([page.waitForURL((u) => u.toString().startsWith(cfg.serviceUrl)), page.click('#save-policy')]);
      await page.waitForSelector('#policy-table');
    }
    out.targetRow = await page.locator(`#policy-table tr[data-name="${cfg.target}"] td`).allTextContents();
    out.xssPolicyText = await page.locator('#policy-table tr[data-kind="group"] td:nth-child(2)').allTextContents();
    out.ledgerLabels = await page.locator('#ledger td.label').allTextContents();
    out.injectedImages = await page.locator('img[src="x"]').count();
    out.pwned = await page.evaluate(() => window.__pwned === 1);
    await page.waitForTimeout(300); // give any injected handler a chance to fire
    await page.screenshot({ path: `${cfg.artifacts}/admin_page.png`, fullPage: true });
    out.title = await page.title();
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(out) + '\n');
})().catch((err) => { console.error(err); process.exit(1); });
