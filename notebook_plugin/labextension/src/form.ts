/**
 * The "Run at scale" form: the notebook's parameters (typed inputs with defaults and help),
 * one run or a sweep, resources and the MLflow experiment. Built from `GET notebooks/parameters`
 * and `GET schema`; the server's field errors are shown next to the inputs they concern.
 */
import { Widget } from '@lumino/widgets';

import { collect, fieldShell, IField, objectFields, placeErrors, resolveSchema, schemaField } from './schemaform';
import { IFieldError, IJsonSchema, INotebookParameters, IParameterInfo, ISchemas } from './types';

export type RunMode = 'run' | 'sweep';

/** Parse what was typed for a parameter; unparseable text is sent as is so the server names it. */
function parseParameter(info: IParameterInfo, text: string): unknown {
  const trimmed = text.trim();
  if (info.nullable && (trimmed === '' || trimmed === 'None')) {
    return null;
  }
  switch (info.type) {
    case 'str':
      return text;
    case 'int':
      return /^[-+]?\d+$/.test(trimmed) ? parseInt(trimmed, 10) : text;
    case 'float': {
      const value = Number(trimmed);
      return trimmed !== '' && Number.isFinite(value) ? value : text;
    }
    case 'bool':
      return trimmed === 'true' ? true : trimmed === 'false' ? false : text;
    default:
      try {
        return JSON.parse(trimmed);
      } catch {
        return text;
      }
  }
}

function shownDefault(info: IParameterInfo): string {
  if (info.default === null || info.default === undefined) {
    return info.nullable ? '' : (info.default_source ?? '');
  }
  return typeof info.default === 'string' ? info.default : JSON.stringify(info.default);
}

function parameterField(info: IParameterInfo): IField {
  let input: HTMLInputElement | HTMLSelectElement;
  if (info.type === 'bool') {
    const select = document.createElement('select');
    for (const choice of info.nullable ? ['true', 'false', 'None'] : ['true', 'false']) {
      const option = document.createElement('option');
      option.value = choice;
      option.textContent = choice;
      select.appendChild(option);
    }
    input = select;
  } else {
    const element = document.createElement('input');
    element.type = info.type === 'int' || info.type === 'float' ? 'number' : 'text';
    if (element.type === 'number') {
      element.step = info.type === 'int' ? '1' : 'any';
    }
    if (info.nullable) {
      element.placeholder = 'None';
    }
    input = element;
  }
  input.classList.add('jp-mod-styled');
  const initial = info.type === 'bool' && info.default === null ? 'None' : shownDefault(info);
  input.value = initial;
  const key = `parameters.${info.name}`;
  const shell = fieldShell(key, `${info.name} (${info.type}${info.nullable ? ' or None' : ''})`, info.help, input);
  const read = () => ({ set: input.value !== initial, value: parseParameter(info, input.value) });
  return { key, node: shell.node, input, read, setError: shell.setError };
}

function spaceField(info: IParameterInfo): IField {
  const input = document.createElement('input');
  input.type = 'text';
  input.classList.add('jp-mod-styled');
  input.placeholder =
    info.type === 'int' ? 'randint(50, 400)' : info.type === 'float' ? 'loguniform(1e-3, 0.3)' : "choice('a', 'b')";
  const key = `sweep.space.${info.name}`;
  const shell = fieldShell(key, `${info.name}: search space`, 'empty: fixed at the value above', input);
  const read = () => ({ set: input.value.trim() !== '', value: input.value.trim() });
  return { key, node: shell.node, input, read, setError: shell.setError };
}

function section(title: string): HTMLElement {
  const node = document.createElement('fieldset');
  node.className = 'jp-nbscale-section';
  const legend = document.createElement('legend');
  legend.textContent = title;
  node.appendChild(legend);
  return node;
}

/** The form widget; `value()` is the POST `runs` body, `showErrors()` places a 400's field errors. */
export class RunForm extends Widget {
  constructor(
    readonly notebook: INotebookParameters,
    readonly schemas: ISchemas,
    mode: RunMode
  ) {
    super();
    this.addClass('jp-nbscale-form');
    this._general = document.createElement('div');
    this._general.className = 'jp-nbscale-error jp-nbscale-general-error';
    this._general.setAttribute('role', 'alert');
    this.node.appendChild(this._general);
    const run = resolveSchema(schemas.run, schemas.run);
    this._sweepSchema = schemas.sweep ?? run.properties?.sweep ?? null;
    this._buildMode(mode);
    this._buildParameters();
    this._buildSweep();
    this._buildResources();
    this.mode = mode;
  }

  /** One run, or a sweep (only when the server offers sweeps). */
  get mode(): RunMode {
    return this._mode;
  }

  set mode(mode: RunMode) {
    this._mode = mode === 'sweep' && this._sweepSchema ? 'sweep' : 'run';
    if (this._general) {
      this._general.textContent = ''; // the last answer was about the other mode's spec
    }
    this.node.classList.toggle('jp-nbscale-mod-sweep', this._mode === 'sweep');
    for (const radio of this._modeRadios) {
      radio.checked = radio.value === this._mode;
    }
  }

  /** The request body for `POST runs`. */
  value(): { [name: string]: unknown } {
    const body: { [name: string]: unknown } = {
      notebook: this.notebook.path,
      parameters: collect(this._parameterFields),
      resources: collect(this._resourceFields),
      tracking: collect(this._trackingFields)
    };
    if (this._mode === 'sweep') {
      body.sweep = { ...collect(this._sweepFields), space: collect(this._spaceFields) };
    }
    return body;
  }

  /** Show the server's message and each field error next to its input. */
  showErrors(message: string, errors: IFieldError[]): void {
    const fields = [
      ...this._parameterFields,
      ...this._spaceFields,
      ...this._sweepFields,
      ...this._resourceFields,
      ...this._trackingFields
    ];
    const unclaimed = placeErrors(fields, errors);
    const lines = errors.length === unclaimed.length ? [message] : unclaimed.map(e => `${e.loc.join('.')}: ${e.msg}`);
    this._general.textContent = lines.filter(Boolean).join('\n');
    const first = this.node.querySelector('.jp-mod-invalid input, .jp-mod-invalid select') as HTMLElement | null;
    first?.focus();
  }

  private _buildMode(mode: RunMode): void {
    const node = document.createElement('div');
    node.className = 'jp-nbscale-mode';
    for (const [value, label] of [
      ['run', 'One run'],
      ['sweep', 'Sweep']
    ]) {
      const wrapper = document.createElement('label');
      const radio = document.createElement('input');
      radio.type = 'radio';
      radio.name = 'nbscale-mode';
      radio.value = value;
      radio.disabled = value === 'sweep' && !this._sweepSchema;
      radio.addEventListener('change', () => (this.mode = value as RunMode));
      wrapper.append(radio, ` ${label}`);
      if (radio.disabled) {
        wrapper.title = 'This server does not offer sweeps';
      }
      this._modeRadios.push(radio);
      node.appendChild(wrapper);
    }
    this.node.appendChild(node);
  }

  private _buildParameters(): void {
    const node = section(`Parameters of ${this.notebook.path}`);
    if (!this.notebook.parameters.length) {
      const empty = document.createElement('p');
      empty.className = 'jp-nbscale-help';
      empty.textContent = "This notebook has no cell tagged 'parameters'; it runs as it is.";
      node.appendChild(empty);
    }
    for (const info of this.notebook.parameters) {
      const field = parameterField(info);
      const space = spaceField(info);
      space.node.classList.add('jp-nbscale-sweep-only');
      this._parameterFields.push(field);
      this._spaceFields.push(space);
      node.append(field.node, space.node);
    }
    this.node.appendChild(node);
  }

  private _buildSweep(): void {
    if (!this._sweepSchema) {
      return;
    }
    // Resolve against the schema that holds the $defs: the sweep's own, or the run's.
    const root = this.schemas.sweep ?? this.schemas.run;
    const node = section('Sweep');
    node.classList.add('jp-nbscale-sweep-only');
    this._sweepFields = objectFields('sweep', root, this._sweepSchema, ['space']);
    node.append(...this._sweepFields.map(f => f.node));
    this.node.appendChild(node);
  }

  private _buildResources(): void {
    const run = this.schemas.run;
    const properties = resolveSchema(run, run).properties ?? {};
    const node = section('Resources');
    if (properties.resources) {
      this._resourceFields = objectFields('resources', run, properties.resources);
      node.append(...this._resourceFields.map(f => f.node));
    }
    this.node.appendChild(node);
    const tracking = properties.tracking ? resolveSchema(run, properties.tracking).properties : undefined;
    if (tracking?.experiment) {
      const track = section('MLflow');
      const field = schemaField('tracking.experiment', run, tracking.experiment, 'experiment');
      (field.input as HTMLInputElement).placeholder = this.notebook.path.split('/').pop()!.replace(/\.ipynb$/, '');
      this._trackingFields.push(field);
      track.appendChild(field.node);
      this.node.appendChild(track);
    }
  }

  private _mode: RunMode = 'run';
  private _sweepSchema: IJsonSchema | null = null;
  private _modeRadios: HTMLInputElement[] = [];
  private _general: HTMLElement;
  private _parameterFields: IField[] = [];
  private _spaceFields: IField[] = [];
  private _sweepFields: IField[] = [];
  private _resourceFields: IField[] = [];
  private _trackingFields: IField[] = [];
}
