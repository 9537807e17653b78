// Drives JupyterLab in Debian's chromium: Run at scale on a notebook, watch it in the Runs panel,
// open its output notebook. Prints one JSON line with what it saw; exits non-zero on failure.
// Usage: node e2e_lab.mjs CONFIG_JSON   (url, token, notebook, parameter, value, shots: [dirs])
import { dismissNews, launchBrowser, openLab, shoot as shootInto } from './e2e_browser.mjs';

const config = JSON.parse(process.argv[2]);
const result = { ok: false, steps: [] };
const step = name => {
  result.steps.push(name);
  console.error(`[e2e] ${name}`);
};

async function shoot(target, name) {
  for (const dir of config.shots) {
    if (dir === config.docsDir && !config.docsNames.includes(name)) continue; // the README's images only
    await shootInto(target, dir, name);
  }
}

const browser = await launchBrowser();
const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
page.on('pageerror', error => console.error(`[page error] ${error.message}`));
try {
  await openLab(page, `${config.url}lab/tree/${config.notebook}?token=${config.token}`);
  step('lab loaded');
  await dismissNews(page, 8000);

  const button = page.locator('.jp-NotebookPanel-toolbar [data-command="nbscale:run-notebook"]');
  await button.waitFor({ timeout: 60000 });
  result.buttonText = (await button.innerText()).trim();
  await page.waitForSelector('.jp-Notebook .jp-Cell', { timeout: 60000 });
  await button.click();
  const dialog = page.locator('.jp-nbscale-dialog');
  const field = dialog.locator(`#nbscale-parameters-${config.parameter}`);
  await field.waitFor({ timeout: 30000 });
  step('dialog open');
  // The GPU quota line sits atop the dialog; outside a hub it says quotas are off.
  const quotaLine = async root => {
    const line = root.locator('.jp-nbscale-quota');
    await line.waitFor({ state: 'visible', timeout: 30000 });
    await page.waitForFunction(node => node.dataset.state !== undefined, await line.elementHandle(), { timeout: 30000 });
    return (await line.innerText()).trim();
  };
  result.dialogQuota = await quotaLine(dialog);
  result.defaultValue = await field.inputValue();

  // Sweep mode shows a search space per parameter and the sweep settings from the server's schema.
  await dialog.locator('input[name="nbscale-mode"][value="sweep"]').check();
  await dialog.locator(`[data-field="sweep.space.${config.parameter}"]`).waitFor({ state: 'visible', timeout: 10000 });
  await dialog.locator('[data-field="sweep.metric"]').waitFor({ state: 'visible', timeout: 10000 });
  result.sweepFields = await dialog.locator('[data-field^="sweep."]:visible').count();
  await shoot(dialog.locator('.jp-Dialog-content'), 'sweep-dialog.png');
  await dialog.locator('input[name="nbscale-mode"][value="run"]').check();
  await dialog.locator(`[data-field="sweep.space.${config.parameter}"]`).waitFor({ state: 'hidden', timeout: 10000 });
  step('sweep mode toggles');

  // A value the server refuses: its message must appear next to that field, and the dialog stays.
  const memory = dialog.locator('#nbscale-resources-memory');
  await memory.fill('lots of it');
  await dialog.locator('.jp-Dialog-button.jp-mod-accept').click();
  const memoryError = dialog.locator('.jp-nbscale-field.jp-mod-invalid[data-field="resources.memory"] .jp-nbscale-error');
  await memoryError.waitFor({ timeout: 30000 });
  result.fieldError = (await memoryError.innerText()).trim();
  step('server error shown next to its field');
  await memory.fill('2Gi');
  result.memoryErrorAfterFix = await memoryError.count(); // typing a new value clears the message

  // A value the browser refuses (1.5 in an int field): JupyterLab greys Submit out, so the field says why.
  await field.fill('1.5');
  const intError = dialog.locator(`.jp-nbscale-field.jp-mod-invalid[data-field="parameters.${config.parameter}"] .jp-nbscale-error`);
  await intError.waitFor({ timeout: 10000 });
  result.intError = (await intError.innerText()).trim();
  result.submitDisabledOnInvalid = await dialog.locator('.jp-Dialog-button.jp-mod-accept').isDisabled();
  await shoot(dialog.locator('.jp-Dialog-content'), 'dialog-field-error.png');
  await field.fill(String(config.value));
  result.intErrorAfterFix = await intError.count();
  step('a refused value says why at its field');

  // The server's "required" sits at the sweep's metric until the field is filled.
  await dialog.locator('input[name="nbscale-mode"][value="sweep"]').check();
  await dialog.locator('.jp-Dialog-button.jp-mod-accept').click();
  const metricError = dialog.locator('.jp-nbscale-field.jp-mod-invalid[data-field="sweep.metric"] .jp-nbscale-error');
  await metricError.waitFor({ timeout: 30000 });
  result.requiredError = (await metricError.innerText()).trim();
  // The mode has no default: its select starts blank and the server asks for it at the field.
  const modeError = dialog.locator('.jp-nbscale-field.jp-mod-invalid[data-field="sweep.mode"] .jp-nbscale-error');
  await modeError.waitFor({ timeout: 30000 });
  result.modeError = (await modeError.innerText()).trim();
  result.modeInitial = await dialog.locator('#nbscale-sweep-mode').inputValue();
  await dialog.locator('#nbscale-sweep-metric').fill('accuracy');
  result.requiredErrorAfterFill = await metricError.count();
  await dialog.locator('#nbscale-sweep-metric').fill('');
  await dialog.locator('input[name="nbscale-mode"][value="run"]').check();
  step('required goes away once filled');

  // Inputs use their labels' font size.
  result.fontSizes = await dialog.locator(`[data-field="parameters.${config.parameter}"]`).evaluate(node =>
    [getComputedStyle(node.querySelector('label')).fontSize, getComputedStyle(node.querySelector('input')).fontSize]);

  await dialog.locator('.jp-nbscale-dialog-body').evaluate(node => (node.scrollTop = 0));
  await shoot(dialog.locator('.jp-Dialog-content'), 'run-at-scale-dialog.png');
  const toast = page.locator('.Toastify__toast', { hasText: /succeeded/ }).first();
  await dialog.locator('.jp-Dialog-button.jp-mod-accept').click();
  await dialog.waitFor({ state: 'detached', timeout: 30000 });
  step('submitted');

  const panel = page.locator('#nbscale-runs');
  await panel.waitFor({ state: 'visible', timeout: 30000 });
  const row = panel.locator('.jp-nbscale-run').first();
  await row.waitFor({ timeout: 30000 });
  result.runId = await row.getAttribute('data-run-id');
  result.panelQuota = await quotaLine(panel.locator('.jp-nbscale-runs-header'));
  result.seenStatuses = [];
  const deadline = Date.now() + config.timeoutMs;
  let status = '';
  while (Date.now() < deadline) {
    status = await row.getAttribute('data-status');
    if (!result.seenStatuses.includes(status)) result.seenStatuses.push(status);
    if (['SUCCEEDED', 'FAILED', 'KILLED'].includes(status)) break;
    await page.waitForTimeout(500);
  }
  result.status = status;
  if (status !== 'SUCCEEDED') {
    result.rowText = await row.innerText();
    throw new Error(`run ended ${status}`);
  }
  await toast.waitFor({ timeout: 15000 });
  result.notification = (await toast.innerText()).trim();
  result.rowText = await row.innerText();
  step('run succeeded in the Runs panel');
  await shoot(page, 'runs-panel.png');

  // Logs, Output notebook, HTML and MLflow share one button style.
  result.actions = await row.locator('.jp-nbscale-run-actions').evaluate(node => [...node.children].map(child => {
    const style = getComputedStyle(child);
    return { label: child.textContent.trim(), style: [style.fontSize, style.height, style.backgroundColor, style.color,
      style.borderRadius, style.fontWeight, style.paddingLeft].join(' ') };
  }));

  if (config.sweepId) {
    result.sweepActions = await panel.locator(`.jp-nbscale-run[data-run-id="${config.sweepId}"] .jp-nbscale-run-actions button`)
      .allInnerTexts();
    result.sweepActions = result.sweepActions.map(label => label.trim());
  }

  // The HTML link renders the executed notebook as a page (sandboxed), not its source.
  const [htmlPage] = await Promise.all([page.context().waitForEvent('page'), row.locator('.jp-nbscale-html').click()]);
  await htmlPage.waitForLoadState('load');
  result.htmlText = (await htmlPage.locator('body').innerText()).slice(0, 20000);
  await shoot(htmlPage, 'output-html.png');
  await htmlPage.close();
  step('the HTML output renders');

  await row.locator('.jp-nbscale-logs').click();
  const logView = page.locator('.jp-nbscale-logs-view');
  await logView.locator('.jp-nbscale-log-state', { hasText: 'the run has ended' }).waitFor({ timeout: 60000 });
  result.logText = await logView.locator('.jp-nbscale-log-text').innerText();
  step('logs view followed the run to its end');

  await row.locator('.jp-nbscale-open-output').click();
  const outputTab = page.locator('.lm-TabBar-tab', { hasText: '.output.ipynb' });
  await outputTab.waitFor({ timeout: 60000 });
  const injected = page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell', { hasText: `${config.parameter} = ${config.value}` }).first();
  await injected.waitFor({ timeout: 60000 });
  result.outputCell = (await injected.innerText()).trim();
  result.outputTitle = (await outputTab.innerText()).trim();
  step('output notebook open with the new value');
  await shoot(page, 'output-notebook.png');

  // The panel uses only theme variables: in the dark theme its background follows the theme.
  const background = () => panel.evaluate(node => getComputedStyle(node).backgroundColor);
  result.lightBackground = await background();
  await page.locator('.lm-MenuBar-itemLabel', { hasText: 'Settings' }).click();
  await page.locator('.lm-Menu-itemLabel', { hasText: /^Theme$/ }).hover();
  await page.locator('.lm-Menu-itemLabel', { hasText: /^JupyterLab Dark$/ }).click();
  await page.waitForSelector('body[data-jp-theme-light="false"]', { state: 'attached', timeout: 30000 });
  // Wait for the dark stylesheet itself: the panel's background turns dark (low luminance).
  await page.waitForFunction(() => {
    const node = document.getElementById('nbscale-runs');
    const color = getComputedStyle(node).backgroundColor;
    const [r, g, b, a] = (color.match(/[\d.]+/g) || ['255', '255', '255']).map(Number);
    const opaque = a === undefined || a === 1; // transparent while the theme's stylesheet is swapped
    return opaque && 0.2126 * r + 0.7152 * g + 0.0722 * b < 100;
  }, null, { timeout: 30000 });
  result.darkBackground = await background();
  await shoot(page, 'runs-panel-dark.png');
  step('dark theme applies');

  // Cancel from the panel: a long run of another notebook ends KILLED.
  if (config.slowNotebook) {
    // A fresh workspace holds only this notebook, so its toolbar is the one clicked.
    await openLab(page, `${config.url}lab/workspaces/cancel/tree/${config.slowNotebook}?reset&token=${config.token}`);
    const slowPanel = page.locator('.jp-NotebookPanel', { hasText: 'time.sleep(seconds)' });
    const slowButton = slowPanel.locator('.jp-NotebookPanel-toolbar [data-command="nbscale:run-notebook"]');
    await slowButton.waitFor({ timeout: 60000 });
    await slowButton.click();
    const slowDialog = page.locator('.jp-nbscale-dialog');
    await slowDialog.locator('#nbscale-parameters-seconds').fill('300');
    await slowDialog.locator('.jp-Dialog-button.jp-mod-accept').click();
    await slowDialog.waitFor({ state: 'detached', timeout: 30000 });
    const slowRow = page.locator(`#nbscale-runs .jp-nbscale-run[data-status="RUNNING"]`).first();
    await slowRow.waitFor({ timeout: 120000 });
    result.cancelledRun = await slowRow.getAttribute('data-run-id');
    await slowRow.locator('.jp-nbscale-cancel').click();
    await page.locator(`#nbscale-runs .jp-nbscale-run[data-run-id="${result.cancelledRun}"][data-status="KILLED"]`)
      .waitFor({ timeout: 90000 });
    step('cancel from the Runs panel ends the run KILLED');
  }

  // Notebook 7 loads the same prebuilt extension: its notebook toolbar has the button too.
  if (config.notebook7) {
    await page.goto(`${config.url}notebooks/${config.notebook}?token=${config.token}`);
    const nb7Button = page.locator('.jp-NotebookPanel-toolbar [data-command="nbscale:run-notebook"]');
    await nb7Button.waitFor({ timeout: 120000 });
    await page.waitForSelector('.jp-Notebook .jp-Cell', { timeout: 60000 });
    await nb7Button.click();
    await page.locator(`.jp-nbscale-dialog #nbscale-parameters-${config.parameter}`).waitFor({ timeout: 30000 });
    await page.locator('.jp-nbscale-dialog .jp-Dialog-button.jp-mod-reject').click();
    step('Notebook 7 shows the button and the dialog');
    result.notebook7 = true;
  }
  result.ok = true;
} catch (error) {
  result.error = String(error && error.stack ? error.stack : error);
  for (const dir of config.shots.slice(-1)) {
    await shootInto(page, dir, 'failure.png').catch(() => {});
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
