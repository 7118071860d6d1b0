// The teacher's classroom: a live grid of the class's screens, broadcast,
// demo, stop all and collect.
//
// Each student has one card, built once and updated in place. A running
// screen's picture refreshes on its own timer (every few seconds, only while
// this tab is visible), never because some other student's progress moved.
import { api, csrfToken, onEvent, showProgress } from "./api.js";

const root = document.getElementById("classroom");
const classroomId = Number(root.dataset.classroom);
const thumbs = document.getElementById("thumbs");
const summary = document.getElementById("class-summary");
const students = JSON.parse(document.getElementById("students").textContent);
let broadcast = JSON.parse(document.getElementById("broadcast").textContent);
const cards = new Map(); // username -> { seat, el, img, placeholder, timer }
const THUMB_EVERY_MS = 5000;
// A workspace's state as the grid shows it (classrooms.displayed_state on the server).
const SHOWN = { pending: "starting", starting: "starting", running: "running", stopping: "stopped", stopped: "stopped", failed: "failed" };
const LABELS = { idle: "no workspace", queued: "queued", starting: "starting", running: "running", stopped: "stopped", failed: "failed" };

const studentPath = (username) => `/classrooms/${classroomId}/students/${encodeURIComponent(username)}/`;
// This page is one grid session: every picture it asks for renews it, and
// each student whose picture it shows is told "your teacher can see your
// screen in the class grid" until the page goes away or hides.
// A released session stays over (the server refuses it), so showing the
// grid again after it hid starts a new one.
const newSession = () => `grid-${crypto.getRandomValues(new Uint32Array(2)).join("-")}`;
let gridSession = newSession();
const thumbnailUrl = (username) => `/api/classrooms/${classroomId}/students/${encodeURIComponent(username)}/thumbnail.png?session=${gridSession}`;
function releaseGrid() {
  const form = new FormData();
  form.append("csrfmiddlewaretoken", csrfToken());
  navigator.sendBeacon(`/api/classrooms/${classroomId}/grid/release/?session=${gridSession}`, form);
  gridSession = newSession();
}
window.addEventListener("pagehide", releaseGrid);

function idle(username) {
  return { username, state: "idle", message: "No workspace yet", progress: 0, workspace: null };
}

function build(username) {
  const el = document.createElement("article");
  el.className = "thumb";
  el.dataset.student = username;
  el.innerHTML = `
    <a class="shot"><img alt="" hidden><span></span></a>
    <footer>
      <div class="who"><strong></strong><span class="state"></span></div>
      <div class="progress"><div class="bar"></div></div>
      <small class="muted step"></small>
      <div class="actions">
        <span class="screen-links"><a class="view">View</a> · <a class="control">Take control</a></span>
        <button type="button" class="secondary retry">Retry</button>
      </div>
    </footer>`;
  el.querySelector("strong").textContent = username;
  const card = {
    el,
    seat: idle(username),
    img: el.querySelector("img"),
    placeholder: el.querySelector(".shot span"),
    timer: null,
    loading: false,
  };
  card.img.alt = `${username}'s screen`;
  el.querySelector(".view").href = studentPath(username);
  el.querySelector(".control").href = `${studentPath(username)}?mode=control`;
  el.querySelector(".retry").addEventListener("click", () => retry(card));
  return card;
}

function showPicture(card, shown) {
  card.img.hidden = !shown;
  card.placeholder.hidden = shown;
}

function update(card) {
  const { seat, el } = card;
  const running = seat.state === "running";
  const shot = el.querySelector(".shot");
  if (running) {
    shot.href = studentPath(seat.username);
    shot.title = "Open the screen large";
  } else {
    shot.removeAttribute("href");
    shot.removeAttribute("title");
  }
  const badge = el.querySelector(".state");
  badge.className = `state ${seat.state}`;
  badge.textContent = LABELS[seat.state] || seat.state;
  const moving = seat.state === "starting" || seat.state === "failed";
  showProgress(el, { progress: running ? 100 : moving ? seat.progress || 0 : 0, message: seat.message, state: seat.state });
  el.querySelector(".screen-links").hidden = !running;
  el.querySelector(".retry").hidden = !(seat.state === "failed" && broadcast);
  el.classList.toggle("failed", seat.state === "failed");
  if (running) {
    if (!card.img.getAttribute("src")) card.placeholder.textContent = "Loading the screen…";
    if (!card.timer && !card.loading) scheduleThumb(card, Math.random() * 800);
  } else {
    clearTimeout(card.timer);
    card.timer = null;
    card.img.removeAttribute("src");
    showPicture(card, false);
    card.placeholder.textContent = { idle: "—", queued: "Waiting for its turn…", starting: "Starting…", stopped: "Stopped", failed: "Did not start" }[seat.state] || "";
  }
  showSummary();
}

function showSummary() {
  const counts = {};
  for (const { seat } of cards.values()) counts[seat.state] = (counts[seat.state] || 0) + 1;
  summary.textContent = ["running", "starting", "queued", "failed", "stopped"]
    .filter((state) => counts[state])
    .map((state) => `${counts[state]} ${state}`)
    .join(" · ");
}

function scheduleThumb(card, delay) {
  clearTimeout(card.timer);
  card.timer = setTimeout(() => loadThumb(card), delay);
}

function loadThumb(card) {
  card.timer = null;
  // Hidden tab: nothing is drawn, so nothing is asked of the server until it shows again.
  if (card.seat.state !== "running" || document.visibilityState !== "visible") return;
  const next = new Image();
  card.loading = true;
  next.onload = () => {
    card.loading = false;
    if (card.seat.state !== "running") return;
    card.img.src = next.src;
    showPicture(card, true);
    scheduleThumb(card, THUMB_EVERY_MS);
  };
  next.onerror = () => {
    card.loading = false;
    if (card.seat.state !== "running") return;
    if (!card.img.getAttribute("src")) card.placeholder.textContent = "No picture yet; trying again…";
    scheduleThumb(card, THUMB_EVERY_MS * 2);
  };
  next.src = `${thumbnailUrl(card.seat.username)}&t=${Date.now()}`;
}

document.addEventListener("visibilitychange", () => {
  for (const card of cards.values()) {
    if (document.visibilityState === "visible" && card.seat.state === "running" && !card.timer && !card.loading) {
      scheduleThumb(card, Math.random() * 800);
    } else if (document.visibilityState !== "visible") {
      clearTimeout(card.timer);
      card.timer = null;
    }
  }
  // Hidden, the grid shows nobody: the students stop being told they are seen.
  if (document.visibilityState !== "visible") releaseGrid();
});

async function retry(card) {
  const button = card.el.querySelector(".retry");
  button.disabled = true;
  try {
    Object.assign(card.seat, await api("POST", `/api/broadcasts/${broadcast.id}/students/${encodeURIComponent(card.seat.username)}/retry/`));
  } catch (error) {
    card.seat.message = error.message;
  } finally {
    button.disabled = false;
  }
  update(card);
}

function resetSeats() {
  const fromBroadcast = new Map((broadcast?.students || []).map((seat) => [seat.username, seat]));
  for (const username of students) {
    let card = cards.get(username);
    if (!card) {
      card = build(username);
      cards.set(username, card);
      thumbs.append(card.el);
    }
    card.seat = { ...idle(username), ...(fromBroadcast.get(username) || {}) };
    update(card);
  }
}

onEvent("seat", (event) => {
  const card = cards.get(event.student);
  if (!card || !broadcast || event.broadcast !== broadcast.id) return;
  const { type, student, ...seat } = event;
  Object.assign(card.seat, seat);
  update(card);
});

onEvent("seat-workspace", (event) => {
  const card = cards.get(event.student);
  if (!card || card.seat.workspace !== event.id) return;
  const { seat } = card;
  seat.progress = event.progress;
  if (seat.state === "starting" || seat.state === "queued") {
    // The start is under way: its seat events say when it is over.
    seat.message = event.message;
  } else if (event.state === "deleted") {
    Object.assign(seat, { state: "stopped", message: "Deleted", workspace: null });
  } else {
    // Over: the workspace says where it is now (stopped by "stop all",
    // restarted by the student, dead and found by reconcile).
    const shown = SHOWN[event.state] || seat.state;
    if (!(seat.state === "failed" && shown === "stopped")) {
      seat.state = shown;
      seat.message = event.message;
    }
  }
  update(card);
});

onEvent("connected", async () => {
  // The live socket (re)opened: seat events sent while it was down were lost,
  // so the broadcast and the collect job are asked for as they are now.
  try {
    if (broadcast) {
      broadcast = await api("GET", `/api/broadcasts/${broadcast.id}/`);
      resetSeats();
    }
    if (collectJob !== null) showCollect(await api("GET", `/api/jobs/${collectJob}/`));
  } catch {
    /* the portal did not answer: the next reconnect asks again */
  }
});

document.getElementById("broadcast-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = e.target;
  const data = new FormData(form);
  const button = form.querySelector("button[type=submit]");
  form.querySelector(".error").textContent = "";
  button.disabled = true;
  try {
    broadcast = await api("POST", `/api/classrooms/${classroomId}/broadcasts/`, {
      display: data.get("display"), apps: data.getAll("apps"), files: data.get("files"),
    });
    resetSeats();
    document.getElementById("class-grid").scrollIntoView({ behavior: "smooth" });
  } catch (error) {
    form.querySelector(".error").textContent = error.message;
  } finally {
    button.disabled = false;
  }
});

const confirmStop = document.getElementById("confirm-stop");
document.getElementById("stop-all").addEventListener("click", () => confirmStop.showModal());
confirmStop.addEventListener("close", async () => {
  if (confirmStop.returnValue !== "stop") return;
  const step = document.getElementById("collect-step");
  try {
    const { stopping } = await api("POST", `/api/classrooms/${classroomId}/stop/`);
    step.textContent = `Stopping ${stopping} workspace${stopping === 1 ? "" : "s"}; starts still queued are cancelled.`;
  } catch (error) {
    step.textContent = error.message;
  }
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
  const error = e.target.querySelector(".error");
  try {
    await api("POST", `/api/classrooms/${classroomId}/demo/`, { workspace: Number(new FormData(e.target).get("workspace")) });
    location.reload();
  } catch (err) {
    error.textContent = err.message;
  }
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
