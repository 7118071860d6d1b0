// What the class's teacher does that a student must see, on every page:
// a broadcast opening for them, a teacher controlling their screen, a demo.
import { onEvent } from "./api.js";

const area = Object.assign(document.createElement("div"), { className: "toast-area" });
document.body.append(area);

function toast(message, link) {
  const item = Object.assign(document.createElement("div"), { className: "toast", role: "status" });
  item.append(message);
  if (link) item.append(Object.assign(document.createElement("a"), { href: link, textContent: "Open" }));
  area.append(item);
  setTimeout(() => item.remove(), 15000);
}

onEvent("notice", (event) => {
  toast(event.message, event.open);
  // On the dashboard nothing is lost by going straight to the new workspace.
  if (event.open && location.pathname === "/student/") setTimeout(() => location.assign(event.open), 1200);
});

let banner = null;
onEvent("control", (event) => {
  banner?.remove();
  banner = null;
  if (event.active) {
    banner = Object.assign(document.createElement("div"), { className: "control-banner", role: "alert" });
    banner.textContent = event.message;
    document.body.append(banner);
  } else {
    toast(event.message);
  }
});

onEvent("demo", (event) => {
  if (event.active && location.pathname !== event.open) {
    toast(`${event.name}: your teacher is showing their screen.`, event.open);
    setTimeout(() => location.assign(event.open), 800);
  }
});
