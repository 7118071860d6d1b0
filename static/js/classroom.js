// The teacher's classroom: a live grid of the class's screens, broadcast,
// demo, stop all and collect.
import { api, onEvent, showProgress } from "./api.js";

const root = document.getElementById("classroom");
const classroomId = Number(root.dataset.classroom);
const thumbs = document.getElementById("thumbs");
const students = JSON.parse(document.getElementById("students").textContent);
let broadcast = JSON.parse(document.getElementById("broadcast").textContent);
const seats = new Map();
const THUMB_EVERY_MS = 5000;

function resetSeats() {
  seats.clear();
  for (const username of students) seats.set(username, { username, state: "idle", message: "No workspace yet", progress: 0 });
  for (const seat of broadcast?.students || []) seats.set(seat.username, { ...seat });
}

function card(seat) {
  const el = document.createElement("article");
  el.className = "thumb";
  el.dataset.student = seat.username;
  const running = seat.state === "running";
  const screenUrl = `/classrooms/${classroomId}/students/${encodeURIComponent(seat.username)}/`;
  el.innerHTML = `
    <a class="shot" ${running ? `href="${screenUrl}" title="Open the screen large"` : ""}>${running ? "" : "<span></span>"}</a>
    <footer>
      <div class="who"><strong></strong><span class="state ${seat.state}">${seat.state}</span></div>
      <div class="progress"><div class="bar" style="width:${seat.progress || 0}%"></div></div>
      <small class="muted step"></small>
      <div class="actions"></div>
    </footer>`;
  el.querySelector("strong").textContent = seat.username;
  el.querySelector(".step").textContent = seat.message || "";
  el.querySelector(".progress").classList.toggle("done", running);
  el.querySelector(".progress").classList.toggle("failed", seat.state === "failed");
  const actions = el.querySelector(".actions");
  if (running) {
    const img = document.createElement("img");
    img.alt = `${seat.username}'s screen`;
    img.src = `/api/classrooms/${classroomId}/students/${encodeURIComponent(seat.username)}/thumbnail.png?t=${Date.now()}`;
    el.querySelector(".shot").append(img);
    actions.innerHTML = `<a href="${screenUrl}">View</a> · <a href="${screenUrl}?mode=control">Take control</a>`;
  } else if (seat.state === "failed" && broadcast) {
    const retry = Object.assign(document.createElement("button"), { type: "button", className: "secondary", textContent: "Retry" });
    retry.addEventListener("click", async () => {
      try {
        Object.assign(seats.get(seat.username), await api("POST", `/api/broadcasts/${broadcast.id}/students/${encodeURIComponent(seat.username)}/retry/`));
      } catch (error) {
        seats.get(seat.username).message = error.message;
      }
      render();
    });
    actions.append(retry);
  } else {
    el.querySelector(".shot span").textContent = seat.state === "idle" ? "—" : "Starting…";
  }
  return el;
}

function render() {
  thumbs.replaceChildren(...[...seats.values()].map(card));
}

function refreshThumbnails() {
  for (const img of thumbs.querySelectorAll("img")) {
    const next = new Image();
    const url = img.src.replace(/t=\d+/, `t=${Date.now()}`);
    next.onload = () => { img.src = url; };
    next.src = url;
  }
}

onEvent("seat", (event) => {
  if (!broadcast || event.broadcast !== broadcast.id) return;
  Object.assign(seats.get(event.student) || {}, event);
  render();
});
onEvent("seat-workspace", (event) => {
  const seat = seats.get(event.student);
  if (!seat || seat.workspace !== event.id) return;
  seat.progress = event.progress;
  if (seat.state !== "running" && seat.state !== "failed") seat.message = event.message;
  if (event.state === "stopped" || event.state === "failed") {
    seat.state = event.state;
    seat.message = event.message;
  }
  render();
});

document.getElementById("broadcast-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = e.target;
  const data = new FormData(form);
  form.querySelector(".error").textContent = "";
  try {
    broadcast = await api("POST", `/api/classrooms/${classroomId}/broadcasts/`, {
      display: data.get("display"), apps: data.getAll("apps"), files: data.get("files"),
    });
    resetSeats();
    render();
  } catch (error) {
    form.querySelector(".error").textContent = error.message;
  }
});

const confirmStop = document.getElementById("confirm-stop");
document.getElementById("stop-all").addEventListener("click", () => confirmStop.showModal());
confirmStop.addEventListener("close", async () => {
  if (confirmStop.returnValue !== "stop") return;
  const { stopping } = await api("POST", `/api/classrooms/${classroomId}/stop/`);
  document.getElementById("collect-step").textContent = `Stopping ${stopping} workspace(s).`;
});

let collectJob = null;
document.getElementById("collect").addEventListener("click", async () => {
  const job = await api("POST", `/api/classrooms/${classroomId}/collect/`);
  collectJob = job.id;
  showCollect({ progress: 2, message: "Collecting…", state: "running" });
});
function showCollect(job) {
  const details = Object.entries(job.result || {}).map(([name, r]) => `${name}: ${r.ok ? "✔" : "✖"} ${r.files} file(s), ${r.detail}`);
  showProgress(document.getElementById("class-grid"), { ...job, message: [job.message, ...details].join(" · ") });
}
onEvent("job", (job) => {
  if (job.id === collectJob) showCollect(job);
});

document.getElementById("demo-form")?.addEventListener("submit", async (e) => {
  e.preventDefault();
  await api("POST", `/api/classrooms/${classroomId}/demo/`, { workspace: Number(new FormData(e.target).get("workspace")) });
  location.reload();
});
document.getElementById("end-demo")?.addEventListener("click", async () => {
  await api("DELETE", `/api/classrooms/${classroomId}/demo/`);
  location.reload();
});

document.getElementById("add-students").addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = e.target;
  const data = new FormData(form);
  const error = form.querySelector(".error");
  error.textContent = "";
  try {
    const file = data.get("csv");
    const csv = file && file.size ? await file.text() : "";
    const names = data.get("students").split(/[\s,;]+/).filter(Boolean);
    if (names.length || csv) await api("POST", `/api/classrooms/${classroomId}/students/`, { students: names, csv });
    if (data.get("teacher")) await api("POST", `/api/classrooms/${classroomId}/teachers/`, { username: data.get("teacher") });
    location.reload();
  } catch (err) {
    error.textContent = err.message;
  }
});

resetSeats();
render();
setInterval(refreshThumbnails, THUMB_EVERY_MS);
