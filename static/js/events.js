// One websocket per page: the user's live events, re-dispatched on `window`
// as "lattice:event" so each widget listens only for what it shows. Each time
// the socket opens, a {type: "connected"} of its own: whatever was published
// while it was closed is lost, so whoever cares asks the server again then.
// The first connection waits for the page's other scripts (DOMContentLoaded
// comes after them all), so that every widget hears its first "connected".
const indicator = document.getElementById("live-indicator");
const CLOSE_UNAUTHENTICATED = 4401; // workspaces/consumers.py
const PING_EVERY_MS = 25000; // under every proxy's idle timeout
const STABLE_MS = 5000; // open this long: the next drop starts again from a short pause
let delay = 500;

function dispatch(event) {
  window.dispatchEvent(new CustomEvent("lattice:event", { detail: event }));
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/ws/events/`);
  let pinger = null;
  let openedAt = null;
  socket.addEventListener("open", () => {
    openedAt = Date.now();
    indicator?.classList.add("on");
    pinger = setInterval(() => socket.send(JSON.stringify({ type: "ping" })), PING_EVERY_MS);
    dispatch({ type: "connected" });
  });
  socket.addEventListener("message", (msg) => {
    const event = JSON.parse(msg.data);
    if (event.type === "pong") return;
    dispatch(event);
  });
  socket.addEventListener("close", (closed) => {
    clearInterval(pinger);
    indicator?.classList.remove("on");
    if (closed.code === CLOSE_UNAUTHENTICATED) {
      // Signed out (here or in another tab): nothing to reconnect to.
      if (indicator) indicator.title = "Signed out: reload the page to sign in again";
      return;
    }
    // The pause grows until a socket stays open: the server accepts and then
    // closes at once while Redis is away (1012), and that must not be a loop.
    if (openedAt !== null && Date.now() - openedAt > STABLE_MS) delay = 500;
    setTimeout(connect, delay);
    delay = Math.min(delay * 2, 10000);
  });
}

if (document.readyState === "loading" || document.readyState === "interactive") {
  document.addEventListener("DOMContentLoaded", connect, { once: true });
} else {
  connect();
}
