// The API client: every call goes from this page to the API's origin, with
// the session's credentials, through the API's CORS whitelist.

const SESSION_KEY = "orchestrator.session";

/** The signed-in session ({token} or {tenant}, or both), from sessionStorage. */
export function loadSession() {
  try {
    const s = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
    return s && (s.token || s.tenant) ? s : null;
  } catch {
    return null;
  }
}

export function saveSession(s) { sessionStorage.setItem(SESSION_KEY, JSON.stringify(s)); }
export function clearSession() { sessionStorage.removeItem(SESSION_KEY); }

/** An API error: status 0 when no answer could be read (refused or unreachable). */
export class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field || "";
  }
}

/** A key for Idempotency-Key: 128 random bits (crypto.randomUUID needs a secure context; this does not). */
export function newKey() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  return "dash-" + Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

export class API {
  constructor(base, session) {
    this.base = base;
    this.session = session;
  }

  get origin() { return new URL(this.base).origin; }

  headers(extra = {}) {
    const h = { ...extra };
    if (this.session?.token) h["Authorization"] = "Bearer " + this.session.token;
    if (this.session?.tenant) h["X-Tenant-ID"] = this.session.tenant;
    return h;
  }

  /**
   * Sends a request and returns the parsed JSON answer; throws ApiError with
   * the API's own code and message on an error answer, or with code
   * "refused" / "unreachable" when the browser could not read any answer.
   */
  async request(method, path, { body, idempotencyKey, signal } = {}) {
    const headers = this.headers(body === undefined ? {} : { "Content-Type": "application/json" });
    if (idempotencyKey) headers["Idempotency-Key"] = idempotencyKey;
    let res;
    try {
      res = await fetch(this.base + path, {
        method, headers, signal, cache: "no-store", credentials: "omit",
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      if (e.name === "AbortError") throw e;
      throw await this.unreadable();
    }
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
    if (!res.ok) {
      const err = data?.error;
      throw new ApiError(res.status, err?.code || "http_" + res.status,
        err?.message || `${res.status} ${res.statusText || "error"}`, err?.field);
    }
    return { data, replayed: res.headers.get("Idempotent-Replayed") === "true", status: res.status };
  }

  /**
   * Tells why no answer could be read. A CORS refusal and a dead server look
   * the same to fetch; a no-cors request (which sends no Origin header and
   * whose answer stays opaque) tells them apart: it succeeds when the API is
   * up, so the API refused this origin.
   */
  async unreadable() {
    const page = location.origin;
    try {
      await fetch(this.base + "/healthz", { mode: "no-cors", cache: "no-store", credentials: "omit" });
      return new ApiError(0, "refused",
        `The API at ${this.origin} refused this page's origin (${page}): it is not in the API's CORS_ALLOWED_ORIGINS, so the browser may not read its answers. Add ${page} to CORS_ALLOWED_ORIGINS and restart the API.`);
    } catch {
      return new ApiError(0, "unreachable", `The API at ${this.origin} cannot be reached (is it running?).`);
    }
  }
}
