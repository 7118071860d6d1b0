// One websocket per page: the user's live events, re-dispatched on `window`
// as "lattice:event" so each widget listens only for what it shows.
const indicator = document.getElementById("live-indicator");
const CLOSE_UNAUTHENTICATED = 4401; // workspaces/consumers.py
const PING_EVERY_MS = 25000; // under every proxy's idle timeout
let delay = 500;

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/ws/events/`);
  let pinger = null;
  socket.addEventListener("open", () => {
    delay = 500;
    indicator?.classList.add("on");
    pinger = setInterval(() => socket.send(JSON.stringify({ type: "ping" })), PING_EVERY_MS);
  });
  socket.addEventListener("message", (msg) => {
    const event = JSON.parse(msg.data);
    if (event.type === "pong") return;
    window.dispatchEvent(new CustomEvent("lattice:event", { detail: event }));
  });
  socket.addEventListener("close", (closed) => {
    clearInterval(pinger);
    indicator?.classList.remove("on");
    if (closed.code === CLOSE_UNAUTHENTICATED) {
      // Signed out (here or in another tab): nothing to reconnect to.
      if (indicator) indicator.title = "Signed out: reload the page to sign in again";
      return;
    }
    setTimeout(connect, delay);
    delay = Math.min(delay * 2, 10000);
  });
}

connect();
