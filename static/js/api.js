// Fetch wrapper for our JSON API with the session cookie and CSRF token.
function csrfToken() {
  const match = document.cookie.match(/(?:^|; )csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

export async function api(method, url, body) {
  const response = await fetch(url, {
    method,
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = response.status === 204 ? {} : await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(data.detail || `Request failed (${response.status})`);
    error.status = response.status;
    throw error;
  }
  return data;
}

export function onEvent(type, handler) {
  window.addEventListener("lattice:event", (e) => {
    if (e.detail.type === type) handler(e.detail);
  });
}

// The bar turns green when the work is over. Jobs say "done", saved images
// "ready"; a job that is "running" is still at work. A workspace that is
// "running" is over (it started), and it always comes at 100 %: so "running"
// counts only when full. Callers with other words for "over" pass doneStates.
export function showProgress(container, { progress, message, state }, doneStates = ["done", "ready"]) {
  const bar = container.querySelector(".progress");
  bar.hidden = false;
  bar.classList.toggle("failed", state === "failed");
  bar.classList.toggle("done", doneStates.includes(state) || (state === "running" && progress >= 100));
  bar.querySelector(".bar").style.width = `${progress}%`;
  const step = container.querySelector(".step");
  if (step) step.textContent = message || "";
}
