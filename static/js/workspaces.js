// The student's workspace list: rendered from the API's data, kept live by
// "workspace" events, with start/stop/delete actions.
import { api, onEvent } from "./api.js";
import { openSaveDialog } from "./save_image.js";

const table = document.querySelector("#workspaces tbody");
const empty = document.getElementById("no-workspaces");
const confirmDelete = document.getElementById("confirm-delete");
const workspaces = new Map(JSON.parse(document.getElementById("initial-workspaces").textContent).map((w) => [w.id, w]));

const ACTIONS = {
  running: ["open", "stop", "delete"],
  starting: ["stop"],
  pending: ["stop"],
  stopping: [],
  stopped: ["start", "delete"],
  failed: ["start", "delete"],
};
const LABELS = { open: "Open", start: "Start", stop: "Stop", delete: "Delete" };

function row(ws) {
  const tr = document.createElement("tr");
  tr.dataset.id = ws.id;
  const apps = ws.apps.length ? ` + ${ws.apps.join(", ")}` : "";
  tr.innerHTML = `<td>${ws.id}</td><td class="env"></td>
    <td><span class="state ${ws.state}">${ws.state}</span></td>
    <td class="progress-cell"><div class="progress"><div class="bar" style="width:${ws.progress}%"></div></div><small class="step muted"></small></td>
    <td><div class="actions"></div></td>`;
  tr.querySelector(".env").textContent = ws.display + apps;
  tr.querySelector(".step").textContent = ws.message;
  const bar = tr.querySelector(".progress");
  bar.classList.toggle("failed", ws.state === "failed");
  bar.classList.toggle("done", ws.state === "running");
  const actions = tr.querySelector(".actions");
  for (const action of ACTIONS[ws.state] || []) {
    if (action === "open") {
      const link = document.createElement("a");
      link.href = `/workspaces/${ws.id}/`;
      link.className = "button primary";
      link.textContent = LABELS.open;
      actions.append(link);
      continue;
    }
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.action = action;
    button.className = action === "delete" ? "danger" : "secondary";
    button.textContent = LABELS[action];
    actions.append(button);
  }
  if (ws.state === "running" || ws.state === "stopped") {
    const select = document.createElement("select");
    select.className = "save-select";
    select.setAttribute("aria-label", "Save a container as an image");
    select.innerHTML = `<option value="">Save as image…</option>`;
    for (const c of ws.containers) select.add(new Option(c.name, c.name));
    actions.append(select);
  }
  return tr;
}

function render() {
  const sorted = [...workspaces.values()].sort((a, b) => b.id - a.id);
  table.replaceChildren(...sorted.map(row));
  empty.hidden = sorted.length > 0;
}

async function act(id, action) {
  try {
    if (action === "delete") {
      confirmDelete.showModal();
      const choice = await new Promise((resolve) =>
        confirmDelete.addEventListener("close", () => resolve(confirmDelete.returnValue), { once: true }),
      );
      if (choice !== "delete") return;
      await api("DELETE", `/api/workspaces/${id}/`);
      workspaces.set(id, { ...workspaces.get(id), state: "stopping", message: "Deleting" });
    } else {
      workspaces.set(id, await api("POST", `/api/workspaces/${id}/${action}/`));
    }
  } catch (error) {
    workspaces.set(id, { ...workspaces.get(id), message: error.message });
  }
  render();
}

table.addEventListener("change", (e) => {
  if (!e.target.matches(".save-select") || !e.target.value) return;
  const id = Number(e.target.closest("tr").dataset.id);
  openSaveDialog(id, workspaces.get(id).containers.map((c) => c.name), e.target.value);
  e.target.value = "";
});

table.addEventListener("click", (e) => {
  const button = e.target.closest("button[data-action]");
  if (button) act(Number(button.closest("tr").dataset.id), button.dataset.action);
});

onEvent("workspace", (event) => {
  if (event.state === "deleted") {
    workspaces.delete(event.id);
  } else if (workspaces.has(event.id)) {
    Object.assign(workspaces.get(event.id), event);
  } else {
    api("GET", `/api/workspaces/${event.id}/`).then((ws) => { workspaces.set(ws.id, ws); render(); });
    return;
  }
  render();
});

onEvent("connected", async () => {
  // The live socket (re)opened: events sent while it was down (Redis
  // restarted, the network blinked) were lost, so the list is asked for anew.
  try {
    const fresh = await api("GET", "/api/workspaces/");
    workspaces.clear();
    for (const ws of fresh) workspaces.set(ws.id, ws);
    render();
  } catch {
    /* the portal did not answer: the next reconnect asks again */
  }
});

const form = document.getElementById("launch-form");
form?.addEventListener("submit", async (e) => {
  e.preventDefault();
  const error = document.getElementById("launch-error");
  error.textContent = "";
  const data = new FormData(form);
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const ws = await api("POST", "/api/workspaces/", { display: data.get("display"), apps: data.getAll("apps") });
    workspaces.set(ws.id, { ...ws, ...workspaces.get(ws.id) });
    render();
  } catch (err) {
    error.textContent = err.message;
  } finally {
    button.disabled = false;
  }
});

render();
