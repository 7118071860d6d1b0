// "Save as image": a dialog that commits one container of a workspace and shows the save's progress.
import { api, onEvent, showProgress } from "./api.js";

const dialog = document.getElementById("save-dialog");
const form = document.getElementById("save-form");
const picker = form.elements.container;
let current = null;
let workspace = null;

// The container to offer first: the one asked for, else the first app (what
// people customise), else the display.
function firstChoice(names, preselected) {
  if (preselected && names.includes(preselected)) return preselected;
  return names.find((name) => name !== "display") ?? names[0];
}

export function openSaveDialog(workspaceId, names, preselected) {
  workspace = workspaceId;
  current = null;
  form.reset();
  picker.replaceChildren(...names.map((name) => new Option(name, name)));
  picker.value = firstChoice(names, preselected);
  picker.disabled = false;
  form.querySelector(".progress").hidden = true;
  form.querySelector(".step").textContent = "";
  form.querySelector("#save-submit").disabled = false;
  dialog.showModal();
}

form.addEventListener("submit", async (e) => {
  if (e.submitter?.value !== "save") return;
  e.preventDefault();
  const data = new FormData(form);
  const container = data.get("container");
  form.querySelector("#save-submit").disabled = true;
  picker.disabled = true;
  try {
    const image = await api("POST", `/api/workspaces/${workspace}/containers/${encodeURIComponent(container)}/commit/`, {
      name: data.get("name"),
      description: data.get("description"),
    });
    current = image.id;
    showProgress(form, { progress: 5, message: `Saving ${container} as ${image.slug}…`, state: "saving" });
  } catch (error) {
    showProgress(form, { progress: 100, message: error.message, state: "failed" });
    form.querySelector("#save-submit").disabled = false;
    picker.disabled = false;
  }
});

onEvent("image", (event) => {
  if (event.id !== current) return;
  const done = event.state === "ready";
  showProgress(form, { ...event, state: done ? "done" : event.state,
    message: done ? `Saved as ${event.slug}. It is in your catalog now.` : event.message });
});
