// "Your files": when they were last backed up, and a button to do it now.
import { jobButton } from "./job_card.js";

const card = document.getElementById("backups");

jobButton(card, document.getElementById("back-up-now"), "/api/backups/", {
  onEnd: (job) => {
    if (job.state !== "done") return;
    const when = card.querySelector(".last-backup");
    when.textContent = `Last backup: ${new Date(job.result.created).toLocaleString()}, ${(job.result.size / 1048576).toFixed(1)} MiB.`;
  },
});
