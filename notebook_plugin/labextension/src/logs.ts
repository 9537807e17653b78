/** A log view that follows `runs/{id}/logs` with long polls until the run is done. */
import { Widget } from '@lumino/widgets';

import { requestAPI } from './api';
import { ILogChunk } from './types';

/** The body of a "Logs: nbs-…" main-area tab. */
export class LogView extends Widget {
  constructor(readonly runId: string) {
    super();
    this.addClass('jp-nbscale-logs-view');
    this._pre = document.createElement('pre');
    this._pre.className = 'jp-nbscale-log-text';
    this._state = document.createElement('div');
    this._state.className = 'jp-nbscale-log-state';
    this._state.textContent = 'following…';
    this.node.append(this._pre, this._state);
    void this._follow();
  }

  dispose(): void {
    this._stopped = true;
    super.dispose();
  }

  private async _follow(): Promise<void> {
    let offset = 0;
    let failures = 0;
    while (!this._stopped) {
      try {
        const chunk = await requestAPI<ILogChunk>(
          `runs/${encodeURIComponent(this.runId)}/logs?offset=${offset}&wait=15`
        );
        failures = 0;
        if (chunk.text) {
          const atBottom = this.node.scrollTop + this.node.clientHeight >= this.node.scrollHeight - 4;
          this._pre.textContent += chunk.text;
          if (atBottom) {
            this.node.scrollTop = this.node.scrollHeight;
          }
        }
        offset = chunk.offset;
        if (chunk.done) {
          this._state.textContent = 'the run has ended';
          return;
        }
      } catch (error) {
        failures += 1;
        this._state.textContent = `cannot read the log: ${(error as Error).message}`;
        if (failures > 5) {
          return;
        }
        await new Promise(resolve => setTimeout(resolve, 2000 * failures));
      }
    }
  }

  private _pre: HTMLPreElement;
  private _state: HTMLElement;
  private _stopped = false;
}
