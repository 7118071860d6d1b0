// Fetch wrapper for our JSON API with the session cookie and CSRF token.
export function csrfToken() {
  const match = document.cookie.match(/(?:^|; )csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

// A FormData body goes as it is (multipart, the browser sets its type); any
// other body as JSON.
export async function api(method, url, body) {
  const form = body instanceof FormData;
  const headers = { "X-CSRFToken": csrfToken() };
  if (!form) headers["Content-Type"] = "application/json";
  const response = await fetch(url, {
    method,
    credentials: "same-origin",
    headers,
    body: body === undefined || form ? body : JSON.stringify(body),
  });
  const data = response.status === 204 ? {} : await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(data.detail || `Request failed (${response.status})`);
    error.status = response.status;
    throw error;
  }
  return data;
}

// The live events (events.js), by type. "connected" is events.js's own: the
// socket (re)opened, so anything published while it was down was missed and
// is worth asking for again.
export function onEvent(type, handler) {
  window.addEventListener("lattice:event", (e) => {
    if (e.detail.type === type) handler(e.detail);
  });
}

// The bar turns green when the work is over. Jobs say "done", saved images
// "ready"; a job that is "running" is still at work. A workspace that is
// "running" is over (it started), and it always comes at 100 %: so "running"
// counts only when full.
export function showProgress(container, { progress, message, state }) {
  const bar = container.querySelector(".progress");
  bar.hidden = false;
  bar.classList.toggle("failed", state === "failed");
  bar.classList.toggle("done", state === "done" || state === "ready" || (state === "running" && progress >= 100));
  bar.querySelector(".bar").style.width = `${progress}%`;
  const step = container.querySelector(".step");
  if (step) step.textContent = message || "";
}
