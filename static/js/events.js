// One websocket per page: the user's live events, re-dispatched on `window`
// as "lattice:event" so each widget listens only for what it shows.
const indicator = document.getElementById("live-indicator");
let delay = 500;

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/ws/events/`);
  socket.addEventListener("open", () => {
    delay = 500;
    indicator?.classList.add("on");
  });
  socket.addEventListener("message", (msg) => {
    const event = JSON.parse(msg.data);
    window.dispatchEvent(new CustomEvent("lattice:event", { detail: event }));
  });
  socket.addEventListener("close", (closed) => {
    indicator?.classList.remove("on");
    if (closed.code === 4401) return; // signed out: nothing to reconnect to
    setTimeout(connect, delay);
    delay = Math.min(delay * 2, 10000);
  });
}

connect();
