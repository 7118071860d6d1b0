// The admin's catalog page: add (engine image, build with a live log, pull),
// enable/disable, delete with confirmation, and the review queue.
import { api, onEvent, showProgress } from "./api.js";

const form = document.getElementById("add-form");
const submit = document.getElementById("add-submit");
const log = document.getElementById("build-log");
const catalogError = document.getElementById("catalog-error");
const catalogNote = document.getElementById("catalog-note");
let tab = "engine";

// The job this page follows, its log by line number, and what arrived for
// jobs not followed yet: a fast worker's first lines beat the POST's answer.
let current = null;
const lines = [];
const early = new Map();
let reloading = false;

for (const button of document.querySelectorAll(".tab")) {
  button.addEventListener("click", () => {
    tab = button.dataset.tab;
    document.querySelectorAll(".tab").forEach((b) => b.classList.toggle("active", b === button));
    form.querySelectorAll("[data-pane]").forEach((pane) => (pane.hidden = pane.dataset.pane !== tab));
  });
}

// Groups and classrooms are asked for only when the visibility needs them.
for (const select of document.querySelectorAll("select[data-visibility]")) {
  const scope = select.closest("form");
  const sync = () => {
    for (const label of scope.querySelectorAll("label[data-for]")) label.hidden = label.dataset.for !== select.value;
  };
  select.addEventListener("change", sync);
  sync();
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

// An entry's fields from a form: the add form's, or an approve form's (only
// a slug and who may use it there).
function fields(data) {
  const out = { slug: data.get("slug"), visibility: data.get("visibility") };
  for (const name of ["title", "kind", "kiosk"]) if (data.get(name)) out[name] = data.get(name);
  if (out.kiosk) out.kiosk = out.kiosk === "true";
  out.groups = out.visibility === "groups" ? data.getAll("groups").map(Number) : [];
  out.classrooms = out.visibility === "classrooms" ? data.getAll("classrooms").map(Number) : [];
  return out;
}

form.addEventListener("submit", async (e) => {
  e.preventDefault();
  const data = new FormData(form);
  const error = form.querySelector(".error");
  error.textContent = "";
  try {
    if (tab === "engine") {
      await api("POST", "/api/admin/images/", { ...fields(data), reference: data.get("reference") });
      location.reload();
    } else if (tab === "pull") {
      follow(await api("POST", "/api/admin/images/pull/", { ...fields(data), reference: data.get("pull_reference") }));
    } else {
      const body = new FormData();
      for (const [key, value] of Object.entries(fields(data))) {
        if (Array.isArray(value)) value.forEach((v) => body.append(key, v));
        else body.append(key, value);
      }
      if (data.get("folder")) body.append("folder", data.get("folder"));
      const file = data.get("context");
      if (!data.get("folder") && file && file.size) body.append("context", file);
      submit.disabled = true;
      follow(await api("POST", "/api/admin/images/build/", body));
    }
  } catch (err) {
    error.textContent = err.message;
    submit.disabled = false;
  }
});

function remember(id) {
  if (!early.has(id)) {
    if (early.size > 20) early.delete(early.keys().next().value);
    early.set(id, { lines: [], job: null });
  }
  return early.get(id);
}

function renderLog() {
  const text = lines.filter((line) => line !== undefined).join("\n");
  log.hidden = text === "";
  log.textContent = text;
  log.scrollTop = log.scrollHeight;
}

function showJob(job) {
  const waiting = job.state === "queued";
  showProgress(form, { progress: waiting ? 2 : job.progress, message: waiting ? "Queued…" : job.message, state: job.state });
  form.querySelector(".step").classList.toggle("failed", job.state === "failed");
  submit.disabled = waiting || job.state === "running";
  if (job.state === "done" && !reloading) {
    reloading = true;
    setTimeout(() => location.reload(), 1500); // the new entry's row, and this job in the list
  }
}

// Follow a job: what the row has kept so far, then every line as it comes.
async function follow(job) {
  current = job.id;
  lines.length = 0;
  const seen = early.get(job.id);
  early.clear();
  for (const [n, line] of seen?.lines || []) lines[n] = line;
  showJob(seen?.job || job);
  renderLog();
  try {
    const kept = await api("GET", `/api/jobs/${job.id}/`);
    if (kept.log) kept.log.split("\n").forEach((line, n) => { if (lines[n] === undefined) lines[n] = line; });
    renderLog();
    if (kept.state === "done" || kept.state === "failed") showJob(kept);
  } catch (err) {
    // The live lines still come; only the ones before this page followed are missing.
  }
}

onEvent("job-log", (event) => {
  if (event.id === current) {
    lines[event.n] = event.line;
    renderLog();
  } else {
    remember(event.id).lines.push([event.n, event.line]);
  }
});
onEvent("job", (job) => {
  if (job.id === current) showJob(job);
  else if (job.kind === "build" || job.kind === "pull") remember(job.id).job = job;
});

// A build or pull still at work when the page opened: follow it here.
const active = document.querySelector("#jobs [data-state=running], #jobs [data-state=queued]");
if (active) follow({ id: Number(active.dataset.job), state: active.dataset.state, progress: 2, message: "" });

const confirmDelete = document.getElementById("confirm-delete-image");
document.getElementById("catalog").addEventListener("click", async (e) => {
  const button = e.target.closest("button[data-action]");
  if (!button) return;
  const row = button.closest("tr");
  catalogError.textContent = "";
  catalogNote.textContent = "";
  try {
    if (button.dataset.action === "toggle") {
      await api("PATCH", `/api/admin/images/${row.dataset.image}/`, { enabled: button.textContent.trim() === "Enable" });
      location.reload();
      return;
    }
    confirmDelete.querySelector(".slug").textContent = row.dataset.slug;
    confirmDelete.showModal();
    const choice = await new Promise((resolve) =>
      confirmDelete.addEventListener("close", () => resolve(confirmDelete.returnValue), { once: true }));
    if (choice !== "delete") return;
    const answer = await api("DELETE", `/api/admin/images/${row.dataset.image}/`);
    row.remove();
    catalogNote.textContent = answer.detail || `Deleted ${row.dataset.slug}.`;
  } catch (err) {
    catalogError.textContent = err.message;
  }
});

for (const article of document.querySelectorAll("[data-review]")) {
  const id = article.dataset.review;
  const error = article.querySelector(".error");
  article.querySelector(".approve-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await api("POST", `/api/admin/reviews/${id}/approve/`, fields(new FormData(e.target)));
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
