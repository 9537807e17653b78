/**
 * nbscale for JupyterLab 4 and Notebook 7: the "Run at scale" toolbar button (declared in
 * schema/plugin.json), palette commands, the Runs side panel and the log views.
 */
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, MainAreaWidget, Notification } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { LabIcon, listIcon } from '@jupyterlab/ui-components';

import { openRunDialog } from './dialog';
import { RunMode } from './form';
import { LogView } from './logs';
import { copyOutputNotebook } from './outputs';
import { RunsPanel } from './runs';
import { IRunRecord } from './types';

import rocketSvg from '../style/rocket.svg';

namespace CommandIDs {
  export const run = 'nbscale:run-notebook';
  export const sweep = 'nbscale:sweep-notebook';
  export const openRuns = 'nbscale:open-runs';
}

const rocketIcon = new LabIcon({ name: 'nbscale:rocket', svgstr: rocketSvg });

/** The notebook a command acts on: the current one (the toolbar's own when its button is clicked). */
function currentNotebookPath(tracker: INotebookTracker | null): string | null {
  return tracker?.currentWidget?.context.path ?? null;
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'nbscale:plugin',
  description: 'Run the open notebook at scale (one run or a sweep) and follow its runs.',
  autoStart: true,
  optional: [INotebookTracker, ICommandPalette, ILayoutRestorer],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker | null,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null
  ) => {
    const openLogs = (run: IRunRecord) => {
      const content = new LogView(run.id);
      const widget = new MainAreaWidget({ content });
      widget.id = `nbscale-logs-${run.id}`;
      widget.title.label = `Logs: ${run.id}`;
      widget.title.icon = rocketIcon;
      widget.title.closable = true;
      app.shell.add(widget, 'main', { mode: 'split-bottom' });
      app.shell.activateById(widget.id);
    };
    const openOutput = async (run: IRunRecord) => {
      try {
        const path = await copyOutputNotebook(app.serviceManager.contents, run);
        await app.commands.execute('docmanager:open', { path });
      } catch (error) {
        Notification.error(`Output of ${run.id}: ${(error as Error).message}`, { autoClose: 8000 });
      }
    };
    const panel = new RunsPanel({ openLogs, openOutput: run => void openOutput(run) });
    panel.title.icon = rocketIcon;
    panel.title.caption = 'nbscale runs';
    app.shell.add(panel, 'right', { rank: 700 });
    restorer?.add(panel, panel.id);

    const launch = async (mode: RunMode) => {
      const path = currentNotebookPath(tracker);
      if (!path) {
        Notification.warning('Open a notebook first: Run at scale runs the current notebook.', { autoClose: 5000 });
        return;
      }
      const current = tracker?.currentWidget;
      if (current && current.context.path === path && current.context.model.dirty) {
        await current.context.save(); // the run reads the notebook from disk
      }
      const record = await openRunDialog(path, mode);
      if (record) {
        panel.track(record);
        app.shell.activateById(panel.id);
        Notification.info(`Submitted ${record.id} (${record.notebook})`, { autoClose: 4000 });
      }
    };
    const hasNotebook = () => !!tracker?.currentWidget;
    app.commands.addCommand(CommandIDs.run, {
      label: 'Run at scale',
      caption: 'Run this notebook with new parameters on nbscale',
      icon: rocketIcon,
      isEnabled: hasNotebook,
      execute: () => launch('run')
    });
    app.commands.addCommand(CommandIDs.sweep, {
      label: 'Sweep at scale',
      caption: 'Sweep this notebook\u2019s parameters on nbscale',
      isEnabled: hasNotebook,
      execute: () => launch('sweep')
    });
    app.commands.addCommand(CommandIDs.openRuns, {
      label: 'Open nbscale runs',
      icon: listIcon,
      execute: () => app.shell.activateById(panel.id)
    });
    for (const command of [CommandIDs.run, CommandIDs.sweep, CommandIDs.openRuns]) {
      palette?.addItem({ command, category: 'nbscale' });
    }
    tracker?.currentChanged.connect(() => app.commands.notifyCommandChanged());
  }
};

export default plugin;
