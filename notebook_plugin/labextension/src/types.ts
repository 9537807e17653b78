/** The shapes of the nbscale REST API (docs/DESIGN.md, "REST API of the server extension"). */

export type RunStatus = 'PENDING' | 'RUNNING' | 'SUCCEEDED' | 'FAILED' | 'KILLED';

export const TERMINAL: ReadonlySet<string> = new Set(['SUCCEEDED', 'FAILED', 'KILLED']);

export interface IParameterInfo {
  name: string;
  type: 'int' | 'float' | 'str' | 'bool' | 'list' | 'dict' | 'any';
  nullable?: boolean;
  default: unknown;
  default_source?: string;
  help: string;
}

export interface INotebookParameters {
  path: string;
  parameters: IParameterInfo[];
}

/** A JSON Schema node, as pydantic emits it. */
export interface IJsonSchema {
  type?: string;
  title?: string;
  description?: string;
  default?: unknown;
  enum?: unknown[];
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  pattern?: string;
  properties?: { [name: string]: IJsonSchema };
  anyOf?: IJsonSchema[];
  $ref?: string;
  $defs?: { [name: string]: IJsonSchema };
  items?: IJsonSchema;
}

export interface ISchemas {
  run: IJsonSchema;
  pipeline?: IJsonSchema;
  /** Present when the server supports sweeps. */
  sweep?: IJsonSchema;
}

export interface IProgress {
  done: number;
  total: number;
  unit: string;
  running?: number;
  stopped?: number;
  failed?: number;
  /** Steps waiting for admission (a Kueue LocalQueue holds their pods). */
  queued?: number;
}

export interface IRunRecord {
  id: string;
  kind: 'run' | 'pipeline' | 'sweep';
  notebook: string;
  status: RunStatus;
  /** The status as people read it, e.g. "queued in team-a" while Kueue holds every step. */
  status_label?: string;
  /** What an unfinished run's status does not say: a cancel under way, or admission holding every step. */
  phase?: 'stopping' | 'queued' | null;
  progress: IProgress;
  created: string;
  started: string | null;
  finished: string | null;
  duration: number | null;
  metrics: { [name: string]: number };
  best: null | { params?: unknown; metric?: string; value?: number };
  mlflow_run_id: string | null;
  links: { mlflow?: string; output_notebook?: string; html?: string };
  error: string | null;
  /** Which executor runs it ("local", "argo"), and for cluster runs the namespace of its Workflow. */
  executor?: string;
  namespace?: string;
  workflow_name?: string;
  /** When a cancel was asked for: a cluster run stops in stages and ends later. */
  cancel_requested?: string | null;
}

export interface IRunList {
  runs: IRunRecord[];
  total: number;
  page: number;
  per_page: number;
}

export interface ILogChunk {
  text: string;
  offset: number;
  done: boolean;
}

export interface IFieldError {
  loc: (string | number)[];
  msg: string;
}
