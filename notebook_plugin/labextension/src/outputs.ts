/**
 * Open a run's executed notebook in Lab: the server serves it from the run's folder (outside the
 * file browser's root), so a copy is saved under `nbscale-outputs/<run id>/` and opened there.
 */
import { Contents } from '@jupyterlab/services';

import { requestAPI } from './api';
import { IRunRecord } from './types';

/** The folder, inside the server root, that holds opened output notebooks. */
export const OUTPUTS_DIR = 'nbscale-outputs';

async function ensureDirectory(contents: Contents.IManager, path: string): Promise<void> {
  try {
    await contents.get(path, { content: false });
  } catch {
    await contents.save(path, { type: 'directory' });
  }
}

/** Copy the run's output notebook into the root and return its path there. */
export async function copyOutputNotebook(contents: Contents.IManager, run: IRunRecord): Promise<string> {
  const notebook = await requestAPI<unknown>(`runs/${encodeURIComponent(run.id)}/outputs/output.ipynb`);
  const stem = run.notebook.split('/').pop()!.replace(/\.ipynb$/, '');
  const folder = `${OUTPUTS_DIR}/${run.id}`;
  await ensureDirectory(contents, OUTPUTS_DIR);
  await ensureDirectory(contents, folder);
  const path = `${folder}/${stem}.output.ipynb`;
  await contents.save(path, { type: 'notebook', format: 'json', content: notebook });
  return path;
}
