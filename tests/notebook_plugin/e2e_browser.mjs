// What the browser scripts share: Debian's chromium through playwright-core, a Lab page made ready,
// and screenshots without Lab's news toast in them.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

/** Debian's chromium, headless, with nothing that reaches beyond 127.0.0.1. */
export function launchBrowser() {
  return chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run', '--disable-dev-shm-usage']
  });
}

/** Answer Lab's "Jupyter news" toast (it comes late, if at all) so that it stays out of screenshots. */
export async function dismissNews(page, timeout = 0) {
  const news = page.locator('.Toastify__toast', { hasText: 'Jupyter news' }).getByRole('button', { name: 'No', exact: true });
  if (timeout) {
    await news.click({ timeout }).catch(() => {});
  } else if (await news.isVisible()) {
    await news.click().catch(() => {});
  }
}

/** Open a Lab URL and wait until its splash screen has gone. */
export async function openLab(page, url) {
  await page.goto(url);
  await page.waitForSelector('#jupyterlab-splash', { state: 'detached', timeout: 120000 });
}

/** Save a screenshot of a page (news toast answered first) or of an element into a folder. */
export async function shoot(target, dir, name) {
  if (typeof target.goto === 'function') {
    await dismissNews(target);
    await target.waitForTimeout(300);
  }
  mkdirSync(dir, { recursive: true });
  await target.screenshot({ path: join(dir, name) });
}
