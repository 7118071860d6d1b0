import { jobButton } from "./job_card.js";

const card = document.getElementById("diagnostics");
const list = card.querySelector(".results");

jobButton(card, document.getElementById("run-diagnostics"), "/api/jobs/diagnostics/", {
  onStart: () => list.replaceChildren(),
  onEnd: (job) =>
    list.replaceChildren(
      ...Object.entries(job.result || {}).map(([name, outcome]) => {
        const item = document.createElement("li");
        item.className = outcome.ok ? "ok" : "bad";
        item.textContent = `${name}: ${outcome.detail} (${outcome.ms} ms)`;
        return item;
      }),
    ),
});
