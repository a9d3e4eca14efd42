// Calls to the voxray API from the page. The key travels only in the Authorization header; it is kept in memory
// and in this tab's sessionStorage (gone when the tab closes), never in a URL, a cookie or the console.

const KEY_SLOT = "voxray.apiKey";

export class ApiError extends Error {
  constructor(status, detail, retryAfter) {
    super(explain(status, detail, retryAfter));
    this.status = status;
    this.detail = detail;
  }
}

// A sentence for each refusal the API documents (docs/serving.md), with the server's own reason.
export function explain(status, detail, retryAfter) {
  const why = detail ? `: ${detail}` : "";
  switch (status) {
    case 0: return `Could not reach the server${why}. Is it running, and is this page served by it?`;
    case 400: return `The server could not read the upload${why}`;
    case 401: return "The API key was refused (missing or wrong). Enter a valid key for this server.";
    case 404: return `Not found${why}`;
    case 413: return `Too large for this server${why}`;
    case 415: return `Unsupported upload type${why}`;
    case 422: return `The server refused the input${why}`;
    case 503: return `The server is busy${why}. Try again${retryAfter ? ` in ${retryAfter} s` : " shortly"}.`;
    default: return `Server error ${status}${why}`;
  }
}

function detailOf(text) {
  try {
    const body = JSON.parse(text);
    const d = body.detail;
    if (Array.isArray(d)) return d.map((e) => `${(e.loc || []).join(".")}: ${e.msg}`).join("; ");
    return typeof d === "string" ? d : JSON.stringify(d);
  } catch {
    return (text || "").slice(0, 300);
  }
}

export class Api {
  constructor(base) {
    this.base = base;  // the app's root URL (the page lives at <root>/viewer/)
    this.key = sessionStorage.getItem(KEY_SLOT) || "";
  }

  setKey(key) {
    this.key = key.trim();
    if (this.key) sessionStorage.setItem(KEY_SLOT, this.key);
    else sessionStorage.removeItem(KEY_SLOT);
  }

  url(path) {
    return new URL(path, this.base).toString();
  }

  headers() {
    return this.key ? { Authorization: `Bearer ${this.key}` } : {};
  }

  async model() {
    let response;
    try {
      response = await fetch(this.url("v1/model"), { headers: this.headers(), cache: "no-store" });
    } catch (err) {
      throw new ApiError(0, err.message);
    }
    const text = await response.text();
    if (!response.ok) throw new ApiError(response.status, detailOf(text), response.headers.get("Retry-After"));
    return JSON.parse(text);
  }

  // POST form data to v1/predict?query; resolves {status, type, body: ArrayBuffer}. `progress(phase, fraction)`
  // hears "upload" (0..1), "wait" (null while the server works) and "download" (0..1 or null).
  predict(form, query, progress) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", this.url(`v1/predict?${new URLSearchParams(query)}`));
      xhr.responseType = "arraybuffer";
      for (const [k, v] of Object.entries(this.headers())) xhr.setRequestHeader(k, v);
      xhr.upload.onprogress = (e) => progress("upload", e.lengthComputable ? e.loaded / e.total : null);
      xhr.upload.onload = () => progress("wait", null);
      xhr.onprogress = (e) => progress("download", e.lengthComputable ? e.loaded / e.total : null);
      xhr.onerror = () => reject(new ApiError(0, "the connection failed"));
      xhr.onload = () => {
        const type = xhr.getResponseHeader("Content-Type") || "";
        if (xhr.status >= 200 && xhr.status < 300) {
          resolve({ status: xhr.status, type, body: xhr.response });
          return;
        }
        const text = new TextDecoder().decode(xhr.response || new ArrayBuffer(0));
        reject(new ApiError(xhr.status, detailOf(text), xhr.getResponseHeader("Retry-After")));
      };
      xhr.send(form);
    });
  }
}
