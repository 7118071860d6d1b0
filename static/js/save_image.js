// "Save as image": a dialog that commits one container and shows the save's progress.
import { api, onEvent, showProgress } from "./api.js";

const dialog = document.getElementById("save-dialog");
const form = document.getElementById("save-form");
let current = null;
let target = null;

export function openSaveDialog(workspaceId, container) {
  target = { workspaceId, container };
  current = null;
  form.reset();
  form.querySelector(".container-name").textContent = container;
  form.querySelector(".progress").hidden = true;
  form.querySelector(".step").textContent = "";
  form.querySelector("#save-submit").disabled = false;
  dialog.showModal();
}

form.addEventListener("submit", async (e) => {
  if (e.submitter?.value !== "save") return;
  e.preventDefault();
  const data = new FormData(form);
  form.querySelector("#save-submit").disabled = true;
  try {
    const image = await api("POST", `/api/workspaces/${target.workspaceId}/containers/${target.container}/commit/`, {
      name: data.get("name"),
      description: data.get("description"),
    });
    current = image.id;
    showProgress(form, { progress: 5, message: `Saving ${image.slug}…`, state: "saving" });
  } catch (error) {
    showProgress(form, { progress: 100, message: error.message, state: "failed" });
    form.querySelector("#save-submit").disabled = false;
  }
});

onEvent("image", (event) => {
  if (event.id !== current) return;
  const done = event.state === "ready";
  showProgress(form, { ...event, state: done ? "done" : event.state,
    message: done ? `Saved as ${event.slug}. It is in your catalog now.` : event.message });
});
