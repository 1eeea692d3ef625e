// Calls to the /v1 API: the key (kept in sessionStorage, sent as a Bearer token on every
// request, never in a URL), RFC 9457 problem details turned into ApiError, and a 401 announced
// to whoever shows the key form.

const KEY = "tunery.apiKey";
const authListeners = new Set();

export function getKey() {
  return sessionStorage.getItem(KEY);
}

export function setKey(key) {
  sessionStorage.setItem(KEY, key.trim());
}

export function forgetKey() {
  sessionStorage.removeItem(KEY);
}

/** `listener(message)` runs when a call finds no key or the server refuses the key. */
export function onAuthRequired(listener) {
  authListeners.add(listener);
  return () => authListeners.delete(listener);
}

/** An error answer: `status`, and the problem's `title`, `detail` and `errors` [{field, message}]. */
export class ApiError extends Error {
  constructor(status, problem = {}) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.name = "ApiError";
    this.status = status;
    this.title = problem.title || `HTTP ${status}`;
    this.detail = problem.detail || "";
    this.errors = Array.isArray(problem.errors) ? problem.errors : [];
    this.retryAfter = problem.retryAfter ?? null;
  }

  /** One line for people: "Title: detail", each field at fault, and when to retry. */
  describe() {
    const fields = this.errors
      .filter((e) => !this.detail.includes(e.message))
      .map((e) => `${e.field}: ${e.message}`);
    const retry = this.retryAfter ? ` Try again in ${this.retryAfter} s.` : "";
    return [`${this.title}${this.detail ? `: ${this.detail}` : ""}`, ...fields].join("; ") + retry;
  }
}

/** A call made without a key, or with one the server refused (401). */
export class AuthRequired extends ApiError {
  constructor(problem) {
    super(401, problem);
    this.name = "AuthRequired";
  }
}

function authRequired(message) {
  for (const listener of authListeners) listener(message);
}

async function problemOf(response) {
  const type = response.headers.get("content-type") || "";
  let problem = {};
  if (type.includes("json")) {
    try {
      problem = await response.json();
    } catch {
      problem = {};
    }
  }
  return { ...problem, retryAfter: response.headers.get("retry-after") };
}

/**
 * fetch(path) with the key; resolves to the Response when it is 2xx, else throws ApiError
 * (AuthRequired for 401, after dropping the refused key and telling the listeners).
 * `options`: method, json (a body to send as JSON) or body (FormData, sent as multipart),
 * headers, signal.
 */
export async function apiFetch(path, { method = "GET", json, body, headers = {}, signal } = {}) {
  const key = getKey();
  if (!key) {
    authRequired("");
    throw new AuthRequired({ title: "Unauthorized", detail: "no API key given" });
  }
  const init = {
    method,
    signal,
    headers: { Accept: "application/json", ...headers, Authorization: `Bearer ${key}` },
    credentials: "omit",
    cache: "no-store",
  };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  } else if (body !== undefined) {
    init.body = body; // the browser sets the multipart Content-Type and its boundary
  }
  const response = await fetch(path, init);
  if (response.ok) return response;
  const problem = await problemOf(response);
  if (response.status === 401) {
    forgetKey();
    const message = `The API key was refused: ${problem.detail || "unauthorized"}.`;
    authRequired(message);
    throw new AuthRequired(problem);
  }
  throw new ApiError(response.status, problem);
}

/** apiFetch, then the JSON body. */
export async function apiJson(path, options) {
  const response = await apiFetch(path, options);
  return response.json();
}

let openApi = null;

/**
 * The API's OpenAPI document (/openapi.json, which needs no key): the request bodies' JSON
 * Schemas that the forms are built from. Fetched once per page load.
 */
export function openApiDocument() {
  openApi ??= fetch("/openapi.json", { credentials: "omit", headers: { Accept: "application/json" } })
    .then((response) => {
      if (!response.ok) throw new ApiError(response.status, { detail: "cannot read /openapi.json" });
      return response.json();
    })
    .catch((error) => {
      openApi = null; // the next page asks again
      throw error;
    });
  return openApi;
}

/** A path with query parameters; empty values are left out. */
export function withQuery(path, params) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") query.set(name, value);
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

function filenameOf(response, fallback) {
  const disposition = response.headers.get("content-disposition") || "";
  const encoded = /filename\*=(?:UTF-8'')?([^;]+)/i.exec(disposition);
  if (encoded) {
    try {
      return decodeURIComponent(encoded[1].trim().replace(/^"|"$/g, ""));
    } catch {
      // fall through to the plain name
    }
  }
  const plain = /filename="?([^";]+)"?/i.exec(disposition);
  return plain ? plain[1] : fallback;
}

/**
 * Downloads a file that needs the key: fetched as a blob with the Authorization header, then
 * saved through a temporary object URL (a plain link could not send the header).
 * Resolves to {filename, size}.
 */
export async function download(path, fallbackName) {
  const response = await apiFetch(path, { headers: { Accept: "*/*" } });
  const blob = await response.blob();
  const filename = filenameOf(response, fallbackName);
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  link.hidden = true;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  return { filename, size: blob.size };
}
