/**
 * The Runs side panel: the user's runs, polled from `GET runs`, with status, progress,
 * duration, best metric, links, logs and cancel. Announces each run that finishes.
 */
import { Notification } from '@jupyterlab/apputils';
import { Poll } from '@lumino/polling';
import { Signal, ISignal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';

import { postJSON, requestAPI } from './api';
import { QuotaLine } from './quota';
import { IRunList, IRunRecord, TERMINAL } from './types';

/** What the panel asks its host to do (open a log view, an output notebook, a URL). */
export interface IRunActions {
  openLogs(run: IRunRecord): void;
  openOutput(run: IRunRecord): void;
}

/** "1m 05s" from seconds. */
export function formatDuration(seconds: number | null): string {
  if (seconds === null || seconds === undefined) {
    return '';
  }
  const s = Math.round(seconds);
  if (s < 60) {
    return `${s}s`;
  }
  const m = Math.floor(s / 60);
  return m < 60 ? `${m}m ${String(s % 60).padStart(2, '0')}s` : `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, '0')}m`;
}

function progressText(run: IRunRecord): string {
  const p = run.progress;
  if (!p || !p.total) {
    return '';
  }
  const extra = [p.running ? `${p.running} running` : '', p.queued ? `${p.queued} queued` : '', p.stopped ? `${p.stopped} stopped` : '']
    .filter(Boolean)
    .join(', ');
  return `${p.done}/${p.total} ${p.unit}${extra ? ` (${extra})` : ''}`;
}

function bestText(run: IRunRecord): string {
  if (run.best && run.best.value !== undefined) {
    return `best ${run.best.metric ?? ''} ${Number(run.best.value).toPrecision(4)}`;
  }
  const names = Object.keys(run.metrics ?? {});
  return names.length ? `${names[0]} ${Number(run.metrics[names[0]]).toPrecision(4)}` : '';
}

/**
 * The badge: the status, or its label while the server says the run is queued or stopping (`phase`, the one
 * rule of the CLI and the magics too), or "stopping" from a click on Cancel until the server has heard it.
 */
function badgeText(run: IRunRecord, cancelClicked: boolean): string {
  if (cancelClicked && !TERMINAL.has(run.status)) {
    return 'stopping';
  }
  return run.phase && run.status_label ? run.status_label : run.status;
}

function element<K extends keyof HTMLElementTagNameMap>(tag: K, className: string, text = ''): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  node.className = className;
  if (text) {
    node.textContent = text;
  }
  return node;
}

const QUOTA_INTERVAL_MS = 10000;

/** The side panel widget. */
export class RunsPanel extends Widget {
  constructor(private _actions: IRunActions) {
    super();
    this.id = 'nbscale-runs';
    this.addClass('jp-nbscale-runs');
    const header = element('div', 'jp-nbscale-runs-header');
    header.appendChild(element('h2', 'jp-nbscale-runs-title', 'nbscale runs'));
    this._summary = element('span', 'jp-nbscale-runs-summary');
    header.appendChild(this._summary);
    header.appendChild(this._quota.node);
    this._list = element('ul', 'jp-nbscale-run-list');
    this._message = element('div', 'jp-nbscale-runs-message');
    this.node.append(header, this._message, this._list);
    this._poll = new Poll({
      factory: () => this.refresh(),
      frequency: { interval: 2000, backoff: true, max: 30000 },
      // Keep polling while runs are active so finishing runs are announced with the panel closed.
      standby: () => !this.isVisible && !this._hasActive,
      name: 'nbscale:runs'
    });
  }

  /** Emitted with each run seen to reach a final status while the panel watched it. */
  get finished(): ISignal<this, IRunRecord> {
    return this._finished;
  }

  /** Watch a run just submitted, so its end is announced even if it is quick. */
  track(run: IRunRecord): void {
    this._seen.set(run.id, run.status);
    this._hasActive = true;
    void this._poll.refresh();
  }

  /** Fetch the runs now (also what the poll calls). */
  async refresh(): Promise<void> {
    // The quota changes slowly and costs the hub a call: at most every QUOTA_INTERVAL_MS.
    void this._quota.refreshAtMost(QUOTA_INTERVAL_MS);
    const list = await requestAPI<IRunList>('runs?per_page=50');
    this._message.textContent = list.runs.length ? '' : 'No runs yet. Open a notebook and click "Run at scale".';
    this._summary.textContent = `${list.total} run${list.total === 1 ? '' : 's'}`;
    this._runs = list.runs;
    this._render();
    this._announce(list.runs);
    this._hasActive = list.runs.some(run => !TERMINAL.has(run.status));
  }

  dispose(): void {
    this._poll.dispose();
    super.dispose();
  }

  private _announce(runs: IRunRecord[]): void {
    for (const run of runs) {
      const before = this._seen.get(run.id);
      if (before !== undefined && !TERMINAL.has(before) && TERMINAL.has(run.status)) {
        this._finished.emit(run);
        const text = `Run ${run.id} (${run.notebook}) ${run.status.toLowerCase()}`;
        if (run.status === 'SUCCEEDED') {
          Notification.success(text, { autoClose: 6000 });
        } else {
          Notification.error(`${text}${run.error ? `: ${run.error}` : ''}`, { autoClose: 10000 });
        }
      }
      this._seen.set(run.id, run.status);
    }
  }

  private _render(): void {
    for (const run of this._runs) {
      if (TERMINAL.has(run.status)) {
        this._stopping.delete(run.id);
      }
    }
    this._list.replaceChildren(...this._runs.map(run => this._row(run)));
  }

  private _row(run: IRunRecord): HTMLElement {
    const row = element('li', `jp-nbscale-run jp-nbscale-status-${run.status.toLowerCase()}`);
    row.dataset.runId = run.id;
    row.dataset.status = run.status;
    const top = element('div', 'jp-nbscale-run-top');
    top.append(
      element('span', 'jp-nbscale-run-notebook', run.notebook),
      element('span', `jp-nbscale-badge jp-nbscale-badge-${run.status.toLowerCase()}`, badgeText(run, this._stopping.has(run.id)))
    );
    const bar = element('progress', 'jp-nbscale-progress') as HTMLProgressElement;
    bar.max = Math.max(1, run.progress?.total || 1);
    bar.value = run.status === 'SUCCEEDED' ? bar.max : Math.min(bar.max, run.progress?.done || 0);
    const meta = element('div', 'jp-nbscale-run-meta');
    meta.append(
      element('span', 'jp-nbscale-run-id', `${run.kind} ${run.id}`),
      element('span', 'jp-nbscale-run-progress', progressText(run)),
      element('span', 'jp-nbscale-run-duration', formatDuration(run.duration)),
      element('span', 'jp-nbscale-run-best', bestText(run))
    );
    if (run.namespace) {
      // A cluster run says where it runs, so that it is told apart from local ones and found with kubectl.
      const where = element('span', 'jp-nbscale-run-where', `${run.executor} · ${run.namespace}`);
      where.title = `Workflow ${run.workflow_name ?? ''} in namespace ${run.namespace}`;
      meta.appendChild(where);
    }
    row.append(top, bar, meta);
    if (run.error) {
      row.appendChild(element('div', 'jp-nbscale-run-error', run.error));
    }
    row.appendChild(this._buttons(run));
    return row;
  }

  private _buttons(run: IRunRecord): HTMLElement {
    const actions = element('div', 'jp-nbscale-run-actions');
    const button = (label: string, className: string, onClick: () => void, disabled = false): HTMLButtonElement => {
      const node = element('button', `jp-Button jp-mod-styled jp-mod-reject jp-nbscale-action ${className}`, label);
      node.disabled = disabled;
      node.addEventListener('click', onClick);
      actions.appendChild(node);
      return node;
    };
    button('Logs', 'jp-nbscale-logs', () => this._actions.openLogs(run));
    // A sweep's notebooks are its trials', in their MLflow runs: it has no one output notebook to open.
    if (run.kind !== 'sweep') {
      const output = button('Output notebook', 'jp-nbscale-open-output', () => this._actions.openOutput(run), !run.links?.output_notebook);
      if (output.disabled) {
        output.title = TERMINAL.has(run.status) ? 'This run kept no output notebook' : 'Available once the run has ended';
      }
    }
    // HTML and MLflow open a new tab; as buttons they share the style of Logs and Output notebook.
    const open = (href: string) => () => window.open(href, '_blank', 'noopener,noreferrer');
    if (run.links?.html) {
      button('HTML', 'jp-nbscale-html', open(run.links.html)).title = 'The executed notebook as a web page';
    }
    if (run.links?.mlflow) {
      button('MLflow', 'jp-nbscale-mlflow', open(run.links.mlflow)).title =
        'Opens the MLflow UI. If the page does not load, start the UI: `make mlflow-ui` in the nbscale checkout.';
    }
    if (!TERMINAL.has(run.status)) {
      // A cluster run stops in stages (Stop, then Terminate after a grace period): say so until it has ended.
      const stopping = this._stopping.has(run.id) || run.phase === 'stopping';
      button(stopping ? 'Stopping…' : 'Cancel', 'jp-nbscale-cancel jp-mod-warn', () => void this._cancel(run), stopping);
    }
    return actions;
  }

  private async _cancel(run: IRunRecord): Promise<void> {
    this._stopping.add(run.id);
    this._render();
    try {
      await postJSON<IRunRecord>(`runs/${encodeURIComponent(run.id)}/cancel`, {});
    } catch (error) {
      this._stopping.delete(run.id);
      Notification.error(`Cancel ${run.id}: ${(error as Error).message}`, { autoClose: 8000 });
    }
    await this._poll.refresh();
  }

  private _finished = new Signal<this, IRunRecord>(this);
  private _list: HTMLElement;
  private _message: HTMLElement;
  private _summary: HTMLElement;
  private _quota = new QuotaLine();
  private _poll: Poll;
  private _seen = new Map<string, string>();
  private _runs: IRunRecord[] = [];
  private _stopping = new Set<string>();
  private _hasActive = false;
}
