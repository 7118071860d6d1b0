// A card whose button queues a background job and shows its progress bar and
// step until it ends (the diagnostics, a backup). Events may beat the POST's
// answer when the worker is quick: they are kept until the job's id is known.
import { api, onEvent, showProgress } from "./api.js";

export function jobButton(card, button, url, { onEnd = () => {}, onStart = () => {} } = {}) {
  let current = null;
  const early = new Map();

  function render(job) {
    showProgress(card, job);
    if (job.state === "done" || job.state === "failed") {
      onEnd(job);
      button.disabled = false;
    }
  }

  onEvent("job", (job) => {
    if (job.id === current) render(job);
    else if (current === null) early.set(job.id, job);
  });

  onEvent("connected", async () => {
    // Events sent while the live socket was down were lost: the job as it is now.
    if (current === null || !button.disabled) return;
    try {
      render(await api("GET", `/api/jobs/${current}/`));
    } catch {
      /* the portal did not answer: the events still come */
    }
  });

  button.addEventListener("click", async () => {
    button.disabled = true;
    current = null;
    onStart();
    try {
      const job = await api("POST", url);
      current = job.id;
      render(early.get(job.id) || { ...job, progress: 2, message: "Queued…" });
      early.clear();
    } catch (error) {
      showProgress(card, { progress: 100, message: error.message, state: "failed" });
      button.disabled = false;
    }
  });
}
