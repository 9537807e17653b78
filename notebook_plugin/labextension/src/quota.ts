/**
 * The one-line GPU quota summary (`GET quota`) shown atop the Run at scale dialog and in the
 * Runs panel header: free GPUs and GPU-hours left, or why quotas are off or unreachable.
 */
import { requestAPI } from './api';

/** A limit the hub sets; null means unlimited. */
type Limit = number | null;

/** `GET quota` when quotas apply (inside JupyterHub) or not (`enabled: false`). */
export interface IQuotaStatus {
  enabled: boolean;
  reason?: string;
  limits?: { max_gpus: Limit; gpu_hours_budget: Limit; window_hours: Limit };
  usage?: { gpus_in_use: number; gpu_hours_in_window: number };
  remaining?: { gpus: Limit; runs: Limit; gpu_hours: Limit };
}

function hours(value: number): string {
  return `${Number(value.toFixed(1))} GPU-hour${value === 1 ? '' : 's'}`;
}

/** The summary sentence for a quota answer. */
export function quotaText(quota: IQuotaStatus): string {
  if (!quota.enabled) {
    return `GPU quotas are off: ${quota.reason || 'not running under JupyterHub'}`;
  }
  const limits = quota.limits ?? { max_gpus: null, gpu_hours_budget: null, window_hours: null };
  const remaining = quota.remaining ?? { gpus: null, runs: null, gpu_hours: null };
  const gpus =
    limits.max_gpus === null || remaining.gpus === null
      ? 'unlimited GPUs'
      : `${remaining.gpus} of ${limits.max_gpus} GPU${limits.max_gpus === 1 ? '' : 's'} free`;
  const budget =
    limits.gpu_hours_budget === null || remaining.gpu_hours === null
      ? 'no GPU-hour budget'
      : `${hours(remaining.gpu_hours)} left this window`;
  return `GPU quota: ${gpus} · ${budget}`;
}

/** A `<div class="jp-nbscale-quota">` that shows the caller's quota; `refresh()` re-reads it. */
export class QuotaLine {
  /** The element to place in a dialog or panel. */
  readonly node: HTMLDivElement;

  constructor() {
    this.node = document.createElement('div');
    this.node.className = 'jp-nbscale-quota';
    this.node.textContent = 'GPU quota: loading…';
  }

  /** Fetch `GET quota` and show it; failures are shown in the line, never thrown. */
  async refresh(): Promise<void> {
    let text: string;
    let state: string;
    try {
      const quota = await requestAPI<IQuotaStatus>('quota');
      text = quotaText(quota);
      state = quota.enabled ? 'on' : 'off';
    } catch (error) {
      text = `GPU quota service unreachable: ${(error as Error).message}`;
      state = 'error';
    }
    this.node.textContent = text;
    this.node.dataset.state = state;
    this.node.classList.toggle('jp-mod-error', state === 'error');
  }

  /** Refresh unless the last refresh started under `minIntervalMs` ago (for callers that poll fast). */
  refreshAtMost(minIntervalMs: number): Promise<void> {
    const now = Date.now();
    if (now - this._last < minIntervalMs) {
      return Promise.resolve();
    }
    this._last = now;
    return this.refresh();
  }

  private _last = 0;
}
