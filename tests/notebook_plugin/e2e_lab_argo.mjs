// Drives JupyterLab in Debian's chromium while its nbscale extension submits to the Kubernetes
// simulation: a run queued by Kueue, then running with its log, then succeeded; a second run
// cancelled from the Runs panel. Prints {"event": NAME} when the test should change the simulation
// and waits for NAME on stdin; ends with one JSON line of what it saw.
// Usage: node e2e_lab_argo.mjs CONFIG_JSON   (url, token, notebook, queue, shots: dir)
import { createInterface } from 'node:readline';

import { dismissNews, launchBrowser, openLab, shoot } from './e2e_browser.mjs';

const config = JSON.parse(process.argv[2]);
const result = { ok: false, steps: [] };
const step = name => {
  result.steps.push(name);
  console.error(`[e2e-argo] ${name}`);
};
const answers = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

/** Let the test change the simulation, and go on when it says it has. */
async function handOver(event) {
  console.log(JSON.stringify({ event }));
  const { value } = await answers.next();
  if (value !== event) throw new Error(`the test answered ${value} to ${event}`);
}

const browser = await launchBrowser();
const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
page.on('pageerror', error => console.error(`[page error] ${error.message}`));
const text = async locator => ((await locator.textContent()) || '').trim();
const panel = page.locator('#nbscale-runs');

/** Run at scale on the open notebook with its defaults; the id of the new run. */
async function runAtScale(previous) {
  await page.locator('.lm-TabBar-tab', { hasText: config.notebook }).first().click();
  const button = page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-NotebookPanel-toolbar [data-command="nbscale:run-notebook"]');
  await button.click({ timeout: 60000 });
  const dialog = page.locator('.jp-nbscale-dialog');
  await dialog.locator('[data-field^="parameters."]').first().waitFor({ timeout: 30000 });
  await dialog.locator('.jp-Dialog-button.jp-mod-accept').click();
  await dialog.waitFor({ state: 'detached', timeout: 30000 });
  const row = panel.locator('.jp-nbscale-run').first();
  await page.waitForFunction(([old]) => {
    const first = document.querySelector('#nbscale-runs .jp-nbscale-run');
    return first && first.dataset.runId !== old;
  }, [previous || ''], { timeout: 30000 });
  return row.getAttribute('data-run-id');
}

try {
  await openLab(page, `${config.url}lab/tree/${config.notebook}?token=${config.token}`);
  await dismissNews(page, 8000);
  await page.waitForSelector('.jp-Notebook .jp-Cell', { timeout: 60000 });
  step('lab loaded');

  // 1. Kueue holds the step's pod behind its scheduling gate: the badge names the LocalQueue.
  result.runId = await runAtScale();
  const row = panel.locator(`.jp-nbscale-run[data-run-id="${result.runId}"]`);
  await row.locator('.jp-nbscale-badge', { hasText: `queued in ${config.queue}` }).waitFor({ timeout: 30000 });
  result.queuedBadge = await text(row.locator('.jp-nbscale-badge'));
  result.queuedProgress = await text(row.locator('.jp-nbscale-run-progress'));
  await shoot(page, config.shots, 'argo-queued.png');
  step('queued in the LocalQueue');
  await handOver('queued');

  // 2. Admitted: the step runs, and its log streams into the log view.
  await row.locator('.jp-nbscale-run-progress', { hasText: '1 running' }).waitFor({ timeout: 30000 });
  result.runningBadge = await text(row.locator('.jp-nbscale-badge'));
  result.runningProgress = await text(row.locator('.jp-nbscale-run-progress'));
  await shoot(page, config.shots, 'argo-running.png');
  step('running');
  await row.locator('.jp-nbscale-logs').click();
  const logView = page.locator('.jp-nbscale-logs-view');
  const logText = logView.locator('.jp-nbscale-log-text');
  await logText.filter({ hasText: 'notebook: line 1' }).waitFor({ timeout: 30000 });
  result.liveLog = await text(logText) + '\n';
  await shoot(page, config.shots, 'argo-logs.png');
  await logView.locator('.jp-nbscale-log-state', { hasText: 'the run has ended' }).waitFor({ timeout: 60000 });
  result.finalLog = await text(logText);
  result.logState = await text(logView.locator('.jp-nbscale-log-state'));
  step('the log view followed the step');

  // 3. The controller finishes the workflow: the row says so.
  await panel.locator(`.jp-nbscale-run[data-run-id="${result.runId}"][data-status="SUCCEEDED"]`).waitFor({ timeout: 30000 });
  result.doneBadge = await text(row.locator('.jp-nbscale-badge'));
  result.doneProgress = await text(row.locator('.jp-nbscale-run-progress'));
  result.doneBar = await row.locator('.jp-nbscale-progress').evaluate(bar => [bar.value, bar.max]);
  result.doneActions = await text(row.locator('.jp-nbscale-run-actions'));
  result.doneButtons = await row.locator('.jp-nbscale-action').evaluateAll(nodes => nodes.map(node =>
    ({ label: node.textContent.trim(), disabled: node.disabled, title: node.title, opacity: getComputedStyle(node).opacity })));
  result.where = await text(row.locator('.jp-nbscale-run-where'));
  await shoot(page, config.shots, 'argo-succeeded.png');
  step('succeeded');

  // 4. Cancel a second run while it runs: Stop, "Stopping…", then KILLED when the workflow has ended.
  result.cancelledRun = await runAtScale(result.runId);
  const victim = panel.locator(`.jp-nbscale-run[data-run-id="${result.cancelledRun}"]`);
  await victim.locator('.jp-nbscale-run-progress', { hasText: '1 running' }).waitFor({ timeout: 30000 });
  const answered = page.waitForResponse(response => response.url().includes(`/runs/${result.cancelledRun}/cancel`),
    { timeout: 30000 });
  // What the panel shows in the same task as the click, before any answer or poll: the click's own feedback.
  result.atClick = await victim.locator('.jp-nbscale-cancel').evaluate((node, id) => {
    node.click();
    const now = document.querySelector(`#nbscale-runs .jp-nbscale-run[data-run-id="${id}"] .jp-nbscale-cancel`);
    return [now.textContent.trim(), now.disabled];
  }, result.cancelledRun);
  const stopping = victim.locator('.jp-nbscale-cancel', { hasText: 'Stopping…' });
  result.stoppingButton = await text(stopping);
  result.stoppingDisabled = await stopping.isDisabled();
  result.stoppingOpacity = await stopping.evaluate(node => getComputedStyle(node).opacity);
  result.stoppingBadge = await text(victim.locator('.jp-nbscale-badge'));
  // The cancel's answer comes while Argo still stops the workflow: from then on the record itself says so.
  const answer = await (await answered).json();
  result.cancelAnswer = { status: answer.status, label: answer.status_label, asked: !!answer.cancel_requested };
  await page.waitForTimeout(500); // the panel refreshes as the answer comes
  result.stoppingAfterAnswer = [await text(victim.locator('.jp-nbscale-badge')), await text(victim.locator('.jp-nbscale-cancel'))];
  await shoot(page, config.shots, 'argo-stopping.png');
  step('stopping');
  await panel.locator(`.jp-nbscale-run[data-run-id="${result.cancelledRun}"][data-status="KILLED"]`).waitFor({ timeout: 60000 });
  result.killedBadge = await text(victim.locator('.jp-nbscale-badge'));
  result.killedError = await text(victim.locator('.jp-nbscale-run-error'));
  result.killedActions = await text(victim.locator('.jp-nbscale-run-actions'));
  await shoot(page, config.shots, 'argo-killed.png');
  step('killed');
  result.ok = true;
} catch (error) {
  result.error = String(error && error.stack ? error.stack : error);
  await shoot(page, config.shots, 'failure.png').catch(() => {});
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
