// What the class's teacher does that a student must see, on every page: a
// workspace a broadcast opened for them, anyone watching or controlling their
// screen (a large view, the class grid's pictures, control: the banner lasts
// exactly as long as the session on the server), a demo. The server keeps each until it is over (GET /api/notices/), so a
// reload, or a page whose live socket connects a moment late, still shows it.
import { api, onEvent } from "./api.js";

const area = Object.assign(document.createElement("div"), { className: "toast-area" });
document.body.append(area);
const notices = new Map(); // notice id -> its element
const controls = new Map(); // workspace id -> { message, mode } ("teach is watching your screen.")
let banner = null;
let leaving = false;

function toast(message, link) {
  const item = Object.assign(document.createElement("div"), { className: "toast", role: "status" });
  item.append(message);
  if (link) item.append(Object.assign(document.createElement("a"), { href: link, textContent: "Open" }));
  area.append(item);
  setTimeout(() => item.remove(), 15000);
}

// On a desktop (their own, or the teacher's demo) or while typing, a student
// is never taken away; anywhere else nothing is lost by going to the new workspace.
function mayNavigate() {
  const onDesktop = /^\/workspaces\/\d+\/$|^\/classrooms\/\d+\/demo\/$/.test(location.pathname);
  const typing = document.activeElement?.matches?.("input, textarea, select, [contenteditable]");
  return !onDesktop && !typing && !leaving;
}

function go(url, delay) {
  leaving = true;
  setTimeout(() => location.assign(url), delay);
}

function dismiss(id) {
  notices.get(id)?.remove();
  notices.delete(id);
  api("DELETE", `/api/notices/${id}/`).catch(() => {});
}

function showNotice(notice) {
  if (location.pathname === notice.open) {
    dismiss(notice.id); // opened: done
    return;
  }
  if (!notices.has(notice.id)) {
    const item = Object.assign(document.createElement("div"), { className: "toast notice", role: "status" });
    item.dataset.notice = notice.id;
    const text = Object.assign(document.createElement("span"), { textContent: notice.message });
    const open = Object.assign(document.createElement("a"), { href: notice.open, textContent: "Open" });
    const close = Object.assign(document.createElement("button"), { type: "button", className: "link", textContent: "Dismiss" });
    close.style.color = "#ced4da";
    close.addEventListener("click", () => dismiss(notice.id));
    item.append(text, open, close);
    area.append(item);
    notices.set(notice.id, item);
  }
  if (mayNavigate()) go(notice.open, 1200);
}

function showControl() {
  const shown = [...controls.values()];
  const messages = [...new Set(shown.map((c) => c.message))];
  document.body.classList.toggle("controlled", shown.some((c) => c.mode === "control"));
  document.body.classList.toggle("watched", messages.length > 0);
  if (!messages.length) {
    banner?.remove();
    banner = null;
    return;
  }
  if (!banner) {
    banner = Object.assign(document.createElement("div"), { className: "control-banner", role: "alert" });
    document.body.append(banner);
  }
  banner.dataset.mode = shown.some((c) => c.mode === "control") ? "control" : "view";
  banner.textContent = messages.join(" ");
}

function showDemo(demo) {
  if (!demo.active || location.pathname === demo.open || leaving) return;
  toast(`${demo.name}: your teacher is showing their screen.`, demo.open);
  go(demo.open, 800);
}

async function refresh() {
  let pending;
  try {
    pending = await api("GET", "/api/notices/");
  } catch {
    return; // the live events still arrive; the next (re)connection asks again
  }
  controls.clear();
  for (const control of pending.control) controls.set(control.workspace, control);
  showControl();
  const ids = new Set(pending.notices.map((notice) => notice.id));
  for (const [id, item] of notices) {
    if (!ids.has(id)) {
      item.remove();
      notices.delete(id);
    }
  }
  pending.demos.forEach(showDemo);
  pending.notices.forEach(showNotice);
}

onEvent("notice", showNotice);

onEvent("control", (event) => {
  const was = controls.has(event.workspace);
  if (event.active) controls.set(event.workspace, event);
  else controls.delete(event.workspace);
  showControl();
  if (!event.active && was) toast(event.message);
});

onEvent("workspace", (event) => {
  // A stopped desktop is nobody's to control; nor is it anything to open.
  if (event.state === "running") return;
  if (controls.delete(event.id)) showControl();
  if (notices.has(event.id)) {
    notices.get(event.id).remove();
    notices.delete(event.id);
  }
});

onEvent("demo", showDemo);

// Ask the server what is pending each time the live socket (re)connects:
// anything published before that moment is in the answer, anything after
// arrives as an event.
onEvent("connected", refresh);
