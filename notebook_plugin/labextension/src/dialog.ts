/**
 * The "Run at scale" dialog. Submitting keeps the dialog open until the server accepts the
 * spec: a 400's field errors are shown in the form, and only a created run closes it.
 */
import { Dialog, Notification } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { ApiError, postJSON, requestAPI } from './api';
import { RunForm, RunMode } from './form';
import { QuotaLine } from './quota';
import { INotebookParameters, IRunRecord, ISchemas } from './types';

/** The dialog body: the form plus the record the server created on submit. */
class RunDialogBody extends Widget implements Dialog.IBodyWidget<IRunRecord | null> {
  constructor(readonly form: RunForm) {
    super();
    this.addClass('jp-nbscale-dialog-body');
    this.quota = new QuotaLine();
    this.node.append(this.quota.node, form.node);
    void this.quota.refresh();
  }

  record: IRunRecord | null = null;
  readonly quota: QuotaLine;

  getValue(): IRunRecord | null {
    return this.record;
  }
}

/** A Dialog whose accept button submits first and closes only on success. */
class RunDialog extends Dialog<IRunRecord | null> {
  constructor(
    private _form: RunDialogBody,
    options: Partial<Dialog.IOptions<IRunRecord | null>>
  ) {
    super({ ...options, body: _form });
  }

  resolve(index?: number): void {
    const accept = (index ?? ACCEPT_INDEX) === ACCEPT_INDEX;
    if (!accept || this._form.record) {
      super.resolve(index);
      return;
    }
    if (this._busy) {
      return;
    }
    this._busy = true;
    this.node.classList.add('jp-nbscale-mod-busy');
    postJSON<IRunRecord>('runs', this._form.form.value())
      .then(record => {
        this._form.record = record;
        super.resolve(index);
      })
      .catch(error => {
        if (error instanceof ApiError) {
          this._form.form.showErrors(error.message, error.errors);
        } else {
          this._form.form.showErrors(String(error), []);
        }
      })
      .finally(() => {
        this._busy = false;
        this.node.classList.remove('jp-nbscale-mod-busy');
      });
  }

  private _busy = false;
}

const ACCEPT_INDEX = 1;

/**
 * Ask the server for the notebook's parameters and the spec schema, show the form, and
 * resolve with the created run (or null when cancelled).
 */
export async function openRunDialog(path: string, mode: RunMode): Promise<IRunRecord | null> {
  let notebook: INotebookParameters;
  let schemas: ISchemas;
  try {
    [notebook, schemas] = await Promise.all([
      requestAPI<INotebookParameters>(`notebooks/parameters?path=${encodeURIComponent(path)}`),
      requestAPI<ISchemas>('schema')
    ]);
  } catch (error) {
    Notification.error(`Run at scale: ${(error as Error).message}`, { autoClose: 8000 });
    return null;
  }
  const form = new RunForm(notebook, schemas, mode);
  const dialog = new RunDialog(new RunDialogBody(form), {
    title: `Run at scale: ${path.split('/').pop()}`,
    buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Submit' })]
  });
  dialog.addClass('jp-nbscale-dialog');
  const result = await dialog.launch();
  return result.button.accept ? result.value : null;
}
