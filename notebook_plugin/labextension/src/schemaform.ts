/**
 * Inputs built from the server's JSON Schema (pydantic's output): one labelled input per
 * property, each with its help text and a slot for the server's error message.
 */
import { IFieldError, IJsonSchema } from './types';

/** One input of the form, addressable by its dotted key (`resources.cpu`). */
export interface IField {
  key: string;
  node: HTMLElement;
  input: HTMLInputElement | HTMLSelectElement;
  read(): { set: boolean; value: unknown };
  setError(message: string): void;
}

/** Follow `$ref` and unwrap `anyOf: [X, null]` so a field sees the schema it must render. */
export function resolveSchema(root: IJsonSchema, node: IJsonSchema): IJsonSchema {
  let current = node;
  for (let hops = 0; hops < 10; hops++) {
    if (current.$ref) {
      const name = current.$ref.split('/').pop() as string;
      current = { ...(root.$defs?.[name] ?? {}), ...withoutRef(current) };
      continue;
    }
    if (current.anyOf) {
      const nonNull = current.anyOf.filter(s => s.type !== 'null');
      if (nonNull.length === 1) {
        current = { ...resolveSchema(root, nonNull[0]), ...withoutAnyOf(current) };
        continue;
      }
    }
    break;
  }
  return current;
}

function withoutRef(node: IJsonSchema): IJsonSchema {
  const { $ref, ...rest } = node;
  void $ref;
  return rest;
}

function withoutAnyOf(node: IJsonSchema): IJsonSchema {
  const { anyOf, ...rest } = node;
  void anyOf;
  return rest;
}

/** The wrapper every field uses: label, input, help line and error line. */
export function fieldShell(key: string, label: string, help: string, input: HTMLElement): {
  node: HTMLElement;
  setError: (message: string) => void;
} {
  const node = document.createElement('div');
  node.className = 'jp-nbscale-field';
  node.dataset.field = key;
  const labelNode = document.createElement('label');
  labelNode.className = 'jp-nbscale-label';
  labelNode.textContent = label;
  const id = `nbscale-${key.replace(/[^A-Za-z0-9_-]/g, '-')}`;
  input.id = id;
  labelNode.htmlFor = id;
  node.appendChild(labelNode);
  node.appendChild(input);
  if (help) {
    const helpNode = document.createElement('div');
    helpNode.className = 'jp-nbscale-help';
    helpNode.textContent = help;
    node.appendChild(helpNode);
  }
  const error = document.createElement('div');
  error.className = 'jp-nbscale-error';
  error.setAttribute('role', 'alert');
  node.appendChild(error);
  const setError = (message: string) => {
    error.textContent = message;
    node.classList.toggle('jp-mod-invalid', !!message);
  };
  // Typing replaces the last message: the browser's own verdict on the value, in plain words, or
  // none (a server error such as "required" goes away once the field is filled).
  const recheck = () => setError(input instanceof HTMLInputElement ? validityMessage(input) : '');
  input.addEventListener('input', recheck);
  input.addEventListener('change', recheck);
  return { node, setError };
}

/**
 * Why the browser refuses this input's value, in plain words; '' when it accepts it. JupyterLab
 * greys out a dialog's Submit button while any input is invalid, so the field must say why.
 */
export function validityMessage(input: HTMLInputElement): string {
  const validity = input.validity;
  if (validity.valid) {
    return '';
  }
  if (validity.badInput) {
    return 'Type a number, such as 3 or 0.5.';
  }
  if (validity.stepMismatch && input.step === '1') {
    const near = Math.round(Number(input.value));
    return `${input.value} is not a whole number: this field takes whole numbers, such as ${near}.`;
  }
  if (validity.rangeUnderflow) {
    return `Type ${input.min} or more.`;
  }
  if (validity.rangeOverflow) {
    return `Type ${input.max} or less.`;
  }
  return input.validationMessage;
}

/** A field for one schema property; the value is read back typed (numbers, booleans, text). */
export function schemaField(key: string, root: IJsonSchema, property: IJsonSchema, name: string): IField {
  const schema = resolveSchema(root, property);
  const label = name; // pydantic's titles are just the capitalised name; the description is the help
  let input: HTMLInputElement | HTMLSelectElement;
  if (schema.enum) {
    const select = document.createElement('select');
    if ((schema.default ?? property.default) === undefined) {
      // No default (a sweep's mode): start blank, or the first option would be sent as if chosen.
      const blank = document.createElement('option');
      blank.value = '';
      blank.textContent = 'choose…';
      select.appendChild(blank);
    }
    for (const choice of schema.enum) {
      const option = document.createElement('option');
      option.value = String(choice);
      option.textContent = String(choice);
      select.appendChild(option);
    }
    input = select;
  } else {
    const element = document.createElement('input');
    if (schema.type === 'boolean') {
      element.type = 'checkbox';
    } else if (schema.type === 'integer' || schema.type === 'number') {
      element.type = 'number';
      element.step = schema.type === 'integer' ? '1' : 'any';
    } else {
      element.type = 'text';
    }
    input = element;
  }
  input.classList.add('jp-mod-styled');
  const initial = schema.default ?? property.default;
  if (input instanceof HTMLInputElement && input.type === 'checkbox') {
    input.checked = initial === true;
  } else if (initial !== undefined && initial !== null) {
    input.value = String(initial);
  }
  const shell = fieldShell(key, label, schema.description || '', input);
  const read = (): { set: boolean; value: unknown } => {
    if (input instanceof HTMLInputElement && input.type === 'checkbox') {
      return { set: input.checked !== (initial === true), value: input.checked };
    }
    const text = input.value.trim();
    if (text === '') {
      return { set: false, value: null };
    }
    if (schema.type === 'integer' || schema.type === 'number') {
      const value = Number(text);
      // Keep the raw text when it is not a number: the server's error then names the field.
      return { set: true, value: Number.isFinite(value) ? value : text };
    }
    return { set: true, value: text };
  };
  return { key, node: shell.node, input, read, setError: shell.setError };
}

/** Fields for every property of an object schema, keyed `prefix.name`. */
export function objectFields(prefix: string, root: IJsonSchema, node: IJsonSchema, skip: string[] = []): IField[] {
  const schema = resolveSchema(root, node);
  return Object.entries(schema.properties ?? {})
    .filter(([name]) => !skip.includes(name))
    .map(([name, property]) => schemaField(`${prefix}.${name}`, root, property, name));
}

/** Values of the fields the user set, as a nested object under their keys' last part. */
export function collect(fields: IField[]): { [name: string]: unknown } {
  const out: { [name: string]: unknown } = {};
  for (const field of fields) {
    const { set, value } = field.read();
    if (set) {
      out[field.key.split('.').pop() as string] = value;
    }
  }
  return out;
}

/**
 * Show each server error next to the field whose key is the longest prefix of its `loc`.
 * Returns the errors no field claimed, for the form's general error area.
 */
export function placeErrors(fields: IField[], errors: IFieldError[]): IFieldError[] {
  for (const field of fields) {
    field.setError('');
  }
  const unclaimed: IFieldError[] = [];
  for (const error of errors) {
    const loc = error.loc.map(String);
    let best: IField | null = null;
    for (const field of fields) {
      const parts = field.key.split('.');
      const matches = parts.length <= loc.length && parts.every((p, i) => p === loc[i]);
      if (matches && (!best || parts.length > best.key.split('.').length)) {
        best = field;
      }
    }
    if (best) {
      best.setError(error.msg);
    } else {
      unclaimed.push(error);
    }
  }
  return unclaimed;
}
