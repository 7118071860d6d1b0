// The admin's catalog page: add (engine image, build with a live log, pull),
// enable/disable, delete with confirmation, and the review queue.
import { api, onEvent, showProgress } from "./api.js";

const form = document.getElementById("add-form");
const log = document.getElementById("build-log");
const catalogError = document.getElementById("catalog-error");
let tab = "engine";
let currentJob = null;

function csrfToken() {
  return document.cookie.match(/(?:^|; )csrftoken=([^;]+)/)?.[1] || "";
}

for (const button of document.querySelectorAll(".tab")) {
  button.addEventListener("click", () => {
    tab = button.dataset.tab;
    document.querySelectorAll(".tab").forEach((b) => b.classList.toggle("active", b === button));
    form.querySelectorAll("[data-pane]").forEach((pane) => (pane.hidden = pane.dataset.pane !== tab));
  });
}

async function loadEngineImages() {
  const select = document.getElementById("engine-images");
  const images = await api("GET", "/api/admin/images/engine/");
  select.replaceChildren(new Option(images.length ? "— choose —" : "No new images on the engine", ""));
  for (const image of images) {
    const kind = image.labels["lattice.kind"] ? ` (${image.labels["lattice.kind"]})` : "";
    select.add(new Option(`${image.reference}${kind}`, image.reference));
  }
}

function fields(data) {
  const out = { slug: data.get("slug"), visibility: data.get("visibility") };
  for (const name of ["title", "kind"]) if (data.get(name)) out[name] = data.get(name);
  out.groups = data.getAll("groups").map(Number);
  out.classrooms = data.getAll("classrooms").map(Number);
  return out;
}

form.addEventListener("submit", async (e) => {
  e.preventDefault();
  const data = new FormData(form);
  const error = form.querySelector(".error");
  error.textContent = "";
  log.textContent = "";
  try {
    if (tab === "engine") {
      await api("POST", "/api/admin/images/", { ...fields(data), reference: data.get("reference") });
      location.reload();
    } else if (tab === "pull") {
      const job = await api("POST", "/api/admin/images/pull/", { ...fields(data), reference: data.get("pull_reference") });
      follow(job);
    } else {
      const body = new FormData();
      for (const [key, value] of Object.entries(fields(data))) {
        if (Array.isArray(value)) value.forEach((v) => body.append(key, v));
        else body.append(key, value);
      }
      if (data.get("folder")) body.append("folder", data.get("folder"));
      const file = data.get("context");
      if (file && file.size) body.append("context", file);
      const response = await fetch("/api/admin/images/build/", {
        method: "POST", body, credentials: "same-origin", headers: { "X-CSRFToken": csrfToken() },
      });
      const job = await response.json();
      if (!response.ok) throw new Error(job.detail || `Request failed (${response.status})`);
      log.hidden = false;
      follow(job);
    }
  } catch (err) {
    error.textContent = err.message;
  }
});

function follow(job) {
  currentJob = job.id;
  showProgress(form, { progress: 2, message: "Queued…", state: "running" });
}

onEvent("job-log", (event) => {
  if (event.id !== currentJob) return;
  log.hidden = false;
  log.textContent += `${event.line}\n`;
  log.scrollTop = log.scrollHeight;
});
onEvent("job", (job) => {
  if (job.id !== currentJob) return;
  showProgress(form, job);
  if (job.state === "done") setTimeout(() => location.reload(), 1500);
});

const confirmDelete = document.getElementById("confirm-delete-image");
document.getElementById("catalog").addEventListener("click", async (e) => {
  const button = e.target.closest("button[data-action]");
  if (!button) return;
  const row = button.closest("tr");
  catalogError.textContent = "";
  try {
    if (button.dataset.action === "toggle") {
      await api("PATCH", `/api/admin/images/${row.dataset.image}/`, { enabled: button.textContent.trim() === "Enable" });
    } else {
      confirmDelete.querySelector(".slug").textContent = row.dataset.slug;
      confirmDelete.showModal();
      const choice = await new Promise((resolve) =>
        confirmDelete.addEventListener("close", () => resolve(confirmDelete.returnValue), { once: true }));
      if (choice !== "delete") return;
      await api("DELETE", `/api/admin/images/${row.dataset.image}/`);
    }
    location.reload();
  } catch (err) {
    catalogError.textContent = err.message;
  }
});

for (const article of document.querySelectorAll("[data-review]")) {
  const id = article.dataset.review;
  const error = article.querySelector(".error");
  article.querySelector(".approve-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const data = new FormData(e.target);
    try {
      await api("POST", `/api/admin/reviews/${id}/approve/`, {
        slug: data.get("slug"), visibility: data.get("visibility"),
        groups: data.getAll("groups").map(Number), classrooms: data.getAll("classrooms").map(Number),
      });
      location.reload();
    } catch (err) {
      error.textContent = err.message;
    }
  });
  article.querySelector(".reject-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await api("POST", `/api/admin/reviews/${id}/reject/`, { reason: new FormData(e.target).get("reason") });
      location.reload();
    } catch (err) {
      error.textContent = err.message;
    }
  });
}

loadEngineImages().catch((err) => (catalogError.textContent = err.message));
