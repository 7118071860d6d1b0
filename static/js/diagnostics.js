import { api, onEvent, showProgress } from "./api.js";

const card = document.getElementById("diagnostics");
const button = document.getElementById("run-diagnostics");
let current = null;
const early = new Map(); // events that beat the POST's answer (a fast worker)

function showResults(result) {
  const list = card.querySelector(".results");
  list.replaceChildren(
    ...Object.entries(result || {}).map(([name, outcome]) => {
      const item = document.createElement("li");
      item.className = outcome.ok ? "ok" : "bad";
      item.textContent = `${name}: ${outcome.detail} (${outcome.ms} ms)`;
      return item;
    }),
  );
}

function render(job) {
  showProgress(card, job);
  if (job.state === "done" || job.state === "failed") {
    showResults(job.result);
    button.disabled = false;
  }
}

onEvent("job", (job) => {
  if (job.id === current) render(job);
  else if (current === null) early.set(job.id, job);
});

button.addEventListener("click", async () => {
  button.disabled = true;
  current = null;
  card.querySelector(".results").replaceChildren();
  try {
    const job = await api("POST", "/api/jobs/diagnostics/");
    current = job.id;
    render(early.get(job.id) || { ...job, progress: 2, message: "Queued…" });
    early.clear();
  } catch (error) {
    showProgress(card, { progress: 100, message: error.message, state: "failed" });
    button.disabled = false;
  }
});
