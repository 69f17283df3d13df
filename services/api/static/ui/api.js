// The API, as the console calls it: the key from sessionStorage as a Bearer token, errors as
// ApiError (status, detail, field), and a 401 announced to the page (the key prompt).

const KEY = 'dlpipe.apiKey';

export function apiKey() {
  return sessionStorage.getItem(KEY) || '';
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
  window.dispatchEvent(new CustomEvent('dlpipe:key'));
}

export class ApiError extends Error {
  constructor(status, detail, field) {
    super(`${status}: ${detail}`);
    this.status = status;
    this.detail = detail;
    this.field = field || null;
  }
}

function detailOf(body, fallback) {
  if (body && typeof body.detail === 'string') return body.detail;
  if (body && body.detail !== undefined) return JSON.stringify(body.detail);
  return fallback;
}

export function authHeaders(extra) {
  const headers = new Headers(extra || {});
  const key = apiKey();
  if (key) headers.set('Authorization', `Bearer ${key}`);
  return headers;
}

function unauthorized(detail) {
  window.dispatchEvent(new CustomEvent('dlpipe:unauthorized', { detail }));
}

/** fetch() a /v1 route; JSON in (a plain object body) and out; `raw`: the Response itself. */
export async function api(path, { method = 'GET', body, headers, raw = false, signal } = {}) {
  const hdrs = authHeaders(headers);
  let payload = body;
  if (body !== undefined && !(body instanceof FormData) && typeof body !== 'string') {
    hdrs.set('Content-Type', 'application/json');
    payload = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, { method, body: payload, headers: hdrs, cache: 'no-store', signal });
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new ApiError(0, `the API cannot be reached (${err.message})`);
  }
  if (!res.ok) {
    let parsed = null;
    try { parsed = await res.json(); } catch { /* not JSON */ }
    const error = new ApiError(res.status, detailOf(parsed, res.statusText || 'request failed'), parsed?.field);
    if (res.status === 401) unauthorized(error.detail);
    throw error;
  }
  window.dispatchEvent(new CustomEvent('dlpipe:authorized'));
  if (raw) return res;
  if (res.status === 204) return null;
  return res.json();
}

/** The job's event stream URL; EventSource sends no headers, so the key goes in the query. */
export function eventsUrl(jobId) {
  const url = new URL(`/v1/jobs/${encodeURIComponent(jobId)}/events`, location.origin);
  const key = apiKey();
  if (key) url.searchParams.set('access_token', key);
  return url.toString();
}

/** An uploaded input's bytes as a blob: URL (fetched with the key in a header, not the URL). */
export async function inputBlobUrl(jobId, index) {
  const res = await api(`/v1/jobs/${encodeURIComponent(jobId)}/inputs/${index}`, { raw: true });
  return { url: URL.createObjectURL(await res.blob()), type: res.headers.get('content-type') || '' };
}

/** A file an output gives (its `url`, from the API: /v1/jobs/{id}/outputs/{i}/files/{name}) as a
 * blob: URL, fetched the same way. */
export async function fileBlobUrl(url) {
  if (!url.startsWith('/v1/jobs/')) throw new ApiError(0, 'not a file of this API');
  const res = await api(url, { raw: true });
  return { url: URL.createObjectURL(await res.blob()), type: res.headers.get('content-type') || '' };
}

export async function inputText(jobId, index) {
  const res = await api(`/v1/jobs/${encodeURIComponent(jobId)}/inputs/${index}`, { raw: true });
  return res.text();
}

let pipelinesCache = null;
export function pipelines({ fresh = false } = {}) {
  if (!pipelinesCache || fresh) {
    pipelinesCache = api('/v1/pipelines').catch((err) => { pipelinesCache = null; throw err; });
  }
  return pipelinesCache;
}

export function errorText(err) {
  if (err instanceof ApiError) return err.field ? `${err.detail} (field ${err.field})` : err.detail;
  return String(err && err.message ? err.message : err);
}
