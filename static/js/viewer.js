// The workspace viewer: noVNC's own RFB client (from Debian's novnc package),
// full window, resizing the remote desktop to the browser, clipboard both
// ways, and a fresh single-use token for every (re)connection.
//
// Never stuck: every way a connection can fail (the token request, a proxy
// that never answers, a dropped socket) ends in another attempt, with a
// growing pause, for as long as the workspace runs; events missed while the
// live socket was down are made up for by asking for the state when it is back.
import { api, csrfToken, onEvent, showProgress } from "./api.js";

const screen = document.getElementById("screen");
const overlay = document.getElementById("overlay");
const stateBadge = document.getElementById("viewer-state");
const clipboardText = document.getElementById("clipboard-text");
const id = Number(screen.dataset.workspace);
const mode = screen.dataset.mode;
// Someone else's screen (a teacher watching or in control, a class watching a
// demo): that desktop must not read this person's clipboard, nor write to it,
// unless they click. Their own desktop shares the clipboard both ways.
const own = screen.dataset.own === "1";
const { tokenUrl, stateUrl, releaseUrl, renewUrl, demoClassroom } = screen.dataset;
// Started now, awaited when first needed: listeners must be in place before
// any await, or a live event sent meanwhile would be lost.
const rfbModule = import(screen.dataset.rfb);

const HANDSHAKE_TIMEOUT = 10000; // ms without noVNC's "connect": try again
const FIRST_FRAME_WAIT = 3000; // ms at most showing "Drawing…" after connecting
const CONTROL_RENEW = 30000; // ms: a teacher's control session ends if this page stops renewing it

let workspace = JSON.parse(document.getElementById("initial-workspace").textContent);
let session = null; // the RFB connection we are on, or trying to open
let retry = 500;
let retryTimer = null;
let ended = false; // a demo that ended: nothing more to connect to

function showOverlay(title, ws) {
  overlay.hidden = false;
  document.getElementById("overlay-title").textContent = title;
  showProgress(overlay, ws);
  // Once it is over (stopped, failed, deleted): the way back, and a start
  // again unless it is gone.
  const over = ["stopped", "failed", "deleted"].includes(ws.state);
  document.getElementById("overlay-actions").hidden = !over;
  const startAgain = document.getElementById("start-again");
  if (startAgain) startAgain.hidden = ws.state === "deleted";
}

function update(ws) {
  workspace = { ...workspace, ...ws };
  stateBadge.textContent = workspace.state;
  stateBadge.className = `state ${workspace.state}`;
  if (workspace.state === "running") {
    if (!session && !retryTimer) connect();
  } else {
    disconnect();
    const titles = {
      stopped: "This workspace is stopped",
      failed: "This workspace could not start",
      stopping: "Stopping…",
      deleted: "This workspace was deleted",
    };
    showOverlay(titles[workspace.state] || "Starting your desktop", workspace);
  }
}

function scheduleRetry(why) {
  if (ended || retryTimer) return;
  showOverlay("Reconnecting…", { ...workspace, progress: 100, message: why });
  retryTimer = setTimeout(async () => {
    retryTimer = null;
    if (stateUrl) {
      // Running still? The answer also brings us back in step after missed events.
      try {
        update(await api("GET", stateUrl));
        return;
      } catch {
        /* the portal did not answer: fall through and try the display anyway */
      }
    }
    connect();
  }, retry);
  retry = Math.min(retry * 2, 8000);
}

async function connect() {
  if (session || ended) return;
  const mine = { rfb: null };
  session = mine; // claimed before any await: a second call while this one waits does nothing
  showOverlay("Connecting to your desktop", { ...workspace, progress: 100, message: "Opening the display…" });
  let grant;
  let RFB;
  try {
    [grant, { default: RFB }] = await Promise.all([api("POST", tokenUrl, { mode }), rfbModule]);
  } catch (error) {
    if (session === mine) session = null;
    // noVNC's code itself did not load: the browser will not fetch it again
    // in this page, so the page loads itself again.
    const codeMissing = await rfbModule.then(() => false, () => true);
    if (codeMissing && window.latticeReload?.()) {
      showOverlay("Loading the viewer again…", { ...workspace, progress: 100, message: error.message });
      return;
    }
    scheduleRetry(`Could not open the display: ${error.message}`);
    return;
  }
  if (session !== mine) return; // stopped or replaced meanwhile
  const rfb = new RFB(screen, grant.url, { credentials: { password: grant.password }, shared: true });
  mine.rfb = rfb;
  rfb.viewOnly = mode === "view";
  // Control: the desktop takes the window's size. View: the picture scales to fit.
  rfb.resizeSession = mode !== "view";
  rfb.scaleViewport = mode === "view";
  rfb.focusOnClick = true;
  const watchdog = setTimeout(() => {
    if (session === mine) rfb.disconnect(); // the "disconnect" handler tries again
  }, HANDSHAKE_TIMEOUT);
  rfb.addEventListener("connect", () => {
    clearTimeout(watchdog);
    if (session !== mine) return;
    retry = 500;
    showOverlay("Drawing your desktop…", { ...workspace, progress: 100, message: "Connected." });
    whenDrawn(rfb).then(() => {
      if (session !== mine) return;
      overlay.hidden = true;
      rfb.focus();
    });
  });
  rfb.addEventListener("disconnect", () => {
    clearTimeout(watchdog);
    if (session !== mine) return; // an old connection saying goodbye late
    session = null;
    if (workspace.state === "running") scheduleRetry("The connection dropped; reconnecting.");
  });
  rfb.addEventListener("clipboard", (e) => {
    clipboardText.value = e.detail.text;
    if (own) navigator.clipboard?.writeText(e.detail.text).catch(() => {});
    else document.getElementById("clipboard-toggle").classList.add("news");
  });
  rfb.addEventListener("credentialsrequired", () => rfb.sendCredentials({ password: grant.password }));
}

// Resolves once the canvas shows more than one colour (the first frame has
// been drawn), or after FIRST_FRAME_WAIT: a screen may well be all one colour.
function whenDrawn(rfb) {
  const started = performance.now();
  return new Promise((resolve) => {
    const look = () => {
      const canvas = screen.querySelector("canvas");
      if (performance.now() - started > FIRST_FRAME_WAIT || (canvas && drawn(canvas))) resolve();
      else setTimeout(look, 50);
    };
    look();
  });
}

function drawn(canvas) {
  if (!canvas.width || !canvas.height) return false;
  const row = canvas.getContext("2d").getImageData(0, canvas.height >> 1, canvas.width, 1).data;
  for (let i = 4; i < row.length; i += 4 * 16) {
    if (row[i] !== row[0] || row[i + 1] !== row[1] || row[i + 2] !== row[2]) return true;
  }
  return false;
}

function disconnect() {
  clearTimeout(retryTimer);
  retryTimer = null;
  const old = session;
  session = null;
  old?.rfb?.disconnect();
}

clipboardText.addEventListener("input", () => session?.rfb?.clipboardPasteFrom(clipboardText.value));
// Text copied in the browser goes to their own desktop when the user comes back to it.
screen.addEventListener("focusin", async () => {
  if (!own) return;
  try {
    const text = await navigator.clipboard.readText();
    if (text && text !== clipboardText.value) {
      clipboardText.value = text;
      session?.rfb?.clipboardPasteFrom(text);
    }
  } catch {
    /* the browser did not grant clipboard reading: the panel still works */
  }
});
document.getElementById("clipboard-toggle").addEventListener("click", (e) => {
  const panel = document.getElementById("clipboard-panel");
  panel.hidden = !panel.hidden;
  e.currentTarget.classList.remove("news");
});
document.getElementById("clipboard-copy")?.addEventListener("click", () => {
  navigator.clipboard?.writeText(clipboardText.value).catch(() => {});
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
    ended = true;
    workspace.state = "stopped";
    disconnect();
    showOverlay("The demo has ended", { progress: 100, state: "done", message: "Back to your own work." });
    setTimeout(() => location.assign("/"), 1500);
  }
});
if (renewUrl) {
  // The student's notice, and this control, last as long as this page says so.
  setInterval(() => api("POST", renewUrl).catch(() => {}), CONTROL_RENEW);
}
if (releaseUrl) {
  // Control ends with the page: the student's notice goes away.
  window.addEventListener("pagehide", () => {
    const form = new FormData();
    form.append("csrfmiddlewaretoken", csrfToken());
    navigator.sendBeacon(releaseUrl, form);
  });
}
document.getElementById("save-image")?.addEventListener("click", async () => {
  const { openSaveDialog } = await import("./save_image.js");
  openSaveDialog(id, (workspace.containers || []).map((c) => c.name));
});
onEvent("connected", async () => {
  // Live events carry every change, except those sent while the live socket
  // was down: the state as it is now brings the page back in step.
  if (!stateUrl || ended) return;
  try {
    update(await api("GET", stateUrl));
  } catch (error) {
    if (error.status === 404) update({ state: "deleted", progress: 100, message: "" });
    /* otherwise the portal did not answer: the events still come */
  }
});

update(workspace);
