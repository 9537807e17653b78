/** Calls to the nbscale server extension under `{base_url}/nbscale/api/`. */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { IFieldError } from './types';

/** An answer from the server that is not 2xx, with the field errors it carried. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly errors: IFieldError[] = []
  ) {
    super(message);
  }
}

/** The URL of an API path (for links the browser follows itself, such as downloads). */
export function apiUrl(path: string): string {
  const settings = ServerConnection.makeSettings();
  return URLExt.join(settings.baseUrl, 'nbscale', 'api', path);
}

/** Send a request to the API; JSON in and out, XSRF handled by ServerConnection. */
export async function requestAPI<T>(path: string, init: RequestInit = {}): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'nbscale', 'api', path);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new ServerConnection.NetworkError(error as TypeError);
  }
  const text = await response.text();
  let data: any = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { message: text };
    }
  }
  if (!response.ok) {
    const message = (data && data.message) || response.statusText || `HTTP ${response.status}`;
    throw new ApiError(response.status, message, (data && data.errors) || []);
  }
  return data as T;
}

/** JSON body helper for POST requests. */
export function postJSON<T>(path: string, body: unknown): Promise<T> {
  return requestAPI<T>(path, { method: 'POST', body: JSON.stringify(body) });
}
