// The workspace viewer: noVNC's own RFB client (from Debian's novnc package),
// full window, resizing the remote desktop to the browser, clipboard both
// ways, and a fresh single-use token for every (re)connection.
import { api, onEvent, showProgress } from "./api.js";

const screen = document.getElementById("screen");
const overlay = document.getElementById("overlay");
const stateBadge = document.getElementById("viewer-state");
const clipboardText = document.getElementById("clipboard-text");
const id = Number(screen.dataset.workspace);
const mode = screen.dataset.mode;
const { tokenUrl, stateUrl, releaseUrl, demoClassroom } = screen.dataset;
const { default: RFB } = await import(screen.dataset.rfb);

let workspace = JSON.parse(document.getElementById("initial-workspace").textContent);
let rfb = null;
let retry = 500;

function showOverlay(title, ws) {
  overlay.hidden = false;
  document.getElementById("overlay-title").textContent = title;
  showProgress(overlay, ws);
  const canStart = ws.state === "stopped" || ws.state === "failed";
  document.getElementById("overlay-actions").hidden = !canStart;
}

function update(ws) {
  workspace = { ...workspace, ...ws };
  stateBadge.textContent = workspace.state;
  stateBadge.className = `state ${workspace.state}`;
  if (workspace.state === "running") {
    if (!rfb) connect();
  } else {
    disconnect();
    const titles = { stopped: "This workspace is stopped", failed: "This workspace could not start", stopping: "Stopping…" };
    showOverlay(titles[workspace.state] || "Starting your desktop", workspace);
  }
}

async function connect() {
  showOverlay("Connecting to your desktop", { ...workspace, progress: 100, message: "Opening the display…" });
  let grant;
  try {
    grant = await api("POST", tokenUrl, { mode });
  } catch (error) {
    showOverlay("Cannot open the display", { progress: 100, state: "failed", message: error.message });
    if (!stateUrl && error.status === 409) setTimeout(connect, 3000); // e.g. a demo not started yet
    return;
  }
  rfb = new RFB(screen, grant.url, { credentials: { password: grant.password }, shared: true });
  rfb.resizeSession = true;
  rfb.scaleViewport = false;
  rfb.viewOnly = mode === "view";
  rfb.focusOnClick = true;
  rfb.addEventListener("connect", () => {
    retry = 500;
    overlay.hidden = true;
    rfb.focus();
  });
  rfb.addEventListener("disconnect", () => {
    rfb = null;
    if (workspace.state !== "running") return;
    // A dropped connection: reconnect with a new token unless the workspace stopped.
    showOverlay("Reconnecting…", { ...workspace, progress: 100, message: "The connection dropped; reconnecting." });
    const refresh = stateUrl ? () => api("GET", stateUrl).then(update).catch(() => {}) : connect;
    setTimeout(refresh, retry);
    retry = Math.min(retry * 2, 8000);
  });
  rfb.addEventListener("clipboard", (e) => {
    clipboardText.value = e.detail.text;
    navigator.clipboard?.writeText(e.detail.text).catch(() => {});
  });
  rfb.addEventListener("credentialsrequired", () => rfb.sendCredentials({ password: grant.password }));
}

function disconnect() {
  if (rfb) {
    const old = rfb;
    rfb = null;
    old.disconnect();
  }
}

clipboardText.addEventListener("input", () => rfb?.clipboardPasteFrom(clipboardText.value));
// Text copied in the browser goes to the desktop when the user comes back to it.
screen.addEventListener("focusin", async () => {
  try {
    const text = await navigator.clipboard.readText();
    if (text && text !== clipboardText.value) {
      clipboardText.value = text;
      rfb?.clipboardPasteFrom(text);
    }
  } catch {
    /* the browser did not grant clipboard reading: the panel still works */
  }
});
document.getElementById("clipboard-toggle").addEventListener("click", () => {
  const panel = document.getElementById("clipboard-panel");
  panel.hidden = !panel.hidden;
});
document.getElementById("fullscreen").addEventListener("click", () => document.documentElement.requestFullscreen?.());
document.getElementById("start-again")?.addEventListener("click", async () => {
  try {
    update(await api("POST", `/api/workspaces/${id}/start/`));
  } catch (error) {
    showOverlay("Cannot start", { progress: 100, state: "failed", message: error.message });
  }
});

onEvent("workspace", (event) => {
  if (event.id === id) update(event);
});
onEvent("seat-workspace", (event) => {
  if (event.id === id) update(event);
});
onEvent("demo", (event) => {
  if (String(event.classroom) === demoClassroom && !event.active) {
    workspace.state = "stopped";
    disconnect();
    showOverlay("The demo has ended", { progress: 100, state: "done", message: "Back to your own work." });
    setTimeout(() => location.assign("/"), 1500);
  }
});
if (releaseUrl) {
  // Control ends with the page: the student's notice goes away.
  window.addEventListener("pagehide", () => {
    const form = new FormData();
    form.append("csrfmiddlewaretoken", document.cookie.match(/(?:^|; )csrftoken=([^;]+)/)?.[1] || "");
    navigator.sendBeacon(releaseUrl, form);
  });
}
document.getElementById("save-image")?.addEventListener("click", async () => {
  const { openSaveDialog } = await import("./save_image.js");
  const names = (workspace.containers || []).map((c) => c.name);
  const choice = names.length > 1 ? prompt(`Save which container? (${names.join(", ")})`, names[1]) : names[0];
  if (choice && names.includes(choice)) openSaveDialog(id, choice);
});

update(workspace);
