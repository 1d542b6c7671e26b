// The REST API as the UI uses it: JSON in and out, errors as ApiError with the server's message.

import { askForToken, forgetToken, storedToken } from "./token.js";

export class ApiError extends Error {
  /** `detail`: the whole `error` object of the answer (a 504 carries the ids to poll). */
  constructor(status, code, message, detail = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
}

const BASE = "/api/v1";

async function request(method, path, { body, token } = {}) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  let payload = body;
  if (body !== undefined && !(body instanceof FormData)) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(BASE + path, { method, headers, body: payload });
  } catch (error) {
    throw new ApiError(0, "network", `Could not reach the server (${error.message}).`);
  }
  if (!response.ok) throw await apiError(response);
  try {
    return await response.json();
  } catch {
    return null;
  }
}

/** The ApiError of a failed answer, with the server's message when it sent one. */
async function apiError(response) {
  let data = null;
  try {
    data = await response.json();
  } catch {
    // Not JSON (a proxy's error page, say): the status line is all there is to say.
  }
  const detail = data && data.error ? data.error : {};
  const message = detail.message || `${response.status} ${response.statusText || "error"}`;
  return new ApiError(response.status, detail.code || "http_error", message, detail);
}

export const getJson = (path) => request("GET", path);

/** GET with the stored write token (none is asked for): the audit log. */
export const getWithToken = (path) => request("GET", path, { token: storedToken() });

/** GET an image (a heat map) as an object URL, which the caller revokes; errors as for JSON. */
export async function getImageUrl(path) {
  let response;
  try {
    response = await fetch(BASE + path, { headers: { Accept: "image/png, application/json" } });
  } catch (error) {
    throw new ApiError(0, "network", `Could not reach the server (${error.message}).`);
  }
  if (!response.ok) throw await apiError(response);
  return URL.createObjectURL(await response.blob());
}

/** POST without a token (predictions). `body` is FormData or a JSON-able object. */
export const post = (path, body) => request("POST", path, { body });

let configPromise = null;

/** `GET /config`, fetched once. */
export function config() {
  configPromise ??= getJson("/config").catch(() => ({ write_token_required: false }));
  return configPromise;
}

/**
 * A write operation: sends the stored token, asks for one when the server needs it and none
 * is stored, and asks again (saying why) when the server answers 401.
 * Throws ApiError(code "cancelled") if the user cancels the question.
 */
export async function write(method, path, body) {
  const { write_token_required: required } = await config();
  let reason = null;
  for (;;) {
    let token = storedToken();
    if (!token && (required || reason)) {
      token = await askForToken(reason);
      if (token === null) throw new ApiError(401, "cancelled", "Cancelled: this action needs the write token.");
    }
    try {
      return await request(method, path, { body, token });
    } catch (error) {
      if (error.status !== 401) throw error;
      forgetToken();
      reason = token
        ? "The server did not accept that token. Check it and enter it again."
        : `The server asks for a write token (${error.message}).`;
    }
  }
}
