// socket.js - the real-time half: one WebSocket that comes back by itself.
//
// Each connect, the first and every reconnect, first asks for a
// single-use ticket (POST /api/v1/ws-tickets, the token in the header)
// and opens /chat/v1/ws?ticket=…, so that the token never appears in a
// URL, where proxies and logs would keep it. A 401 for the ticket means
// the session is gone; any other failure to get one counts as a failed
// attempt.
//
// After a drop it waits a jittered, exponentially growing delay (0.5 s,
// 1 s, 2 s ... up to 30 s, each times a random 0.5-1) so that a server
// restart is not met by every client at the same instant; the delay resets
// once a connection reaches "ready". It reconnects at once when the
// browser says it is back online. Frames are JSON both ways.

const BASE_MS = 500;
const MAX_MS = 30000;

export class Live {
  // ticketFn(): a promise of a ticket string; it rejects with an error
  // whose status is 401 when the session is gone.
  // handlers: { frame(obj), up(), down(attempt, delayMs, failedBeforeReady), refused(reason) }
  // userId: the session's user, sent as ?user= so that a load balancer in
  // front of several nodes keeps all of the user's sockets on one node.
  constructor(ticketFn, handlers, userId) {
    this.ticketFn = ticketFn;
    this.userId = userId;
    this.h = handlers;
    this.ws = null;
    this.connecting = false;    // a ticket is being fetched
    this.ready = false;
    this.attempt = 0;
    this.timer = null;
    this.stopped = true;
    this.failedBeforeReady = 0;
    this.onOnline = () => {
      if (!this.stopped && !this.ws) this.connectNow();
    };
    window.addEventListener('online', this.onOnline);
  }

  start() {
    this.stopped = false;
    this.connectNow();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    window.removeEventListener('online', this.onOnline);
    if (this.ws) {
      this.ws.onclose = null;
      this.ws.close(1000);
    }
    this.ws = null;
    this.ready = false;
  }

  async connectNow() {
    clearTimeout(this.timer);
    this.timer = null;
    if (this.ws || this.connecting || this.stopped) return;
    this.connecting = true;
    let ticket;
    try {
      ticket = await this.ticketFn();
    } catch (e) {
      this.connecting = false;
      if (this.stopped) return;
      if (e && e.status === 401) {
        this.h.refused('expired');
        return;
      }
      this.failedBeforeReady++;
      this.scheduleRetry(e && e.retryAfterMs);
      return;
    }
    this.connecting = false;
    if (this.stopped || this.ws) return;
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const user = this.userId ? `&user=${encodeURIComponent(this.userId)}` : '';
    const url = `${scheme}//${location.host}/chat/v1/ws?ticket=${encodeURIComponent(ticket)}${user}`;
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (e) {
      this.failedBeforeReady++;
      this.scheduleRetry();
      return;
    }
    this.ws = ws;
    ws.onmessage = (ev) => {
      let f;
      try {
        f = JSON.parse(ev.data);
      } catch (e) {
        return;
      }
      if (f.type === 'ready') {
        this.ready = true;
        this.attempt = 0;
        this.failedBeforeReady = 0;
      }
      this.h.frame(f);
      if (f.type === 'ready') this.h.up();
    };
    ws.onclose = (ev) => {
      const wasReady = this.ready;
      this.ws = null;
      this.ready = false;
      if (this.stopped) return;
      if (ev.code === 1008) {
        // The device was logged out (here or elsewhere).
        this.h.refused('logged-out');
        return;
      }
      if (!wasReady) this.failedBeforeReady++;
      this.scheduleRetry();
    };
  }

  // minMs: the server's own "try again in" (a 429), if it gave one.
  scheduleRetry(minMs) {
    const exp = Math.min(MAX_MS, BASE_MS * 2 ** this.attempt);
    let delay = Math.round(exp * (0.5 + Math.random() * 0.5));
    if (minMs > delay) delay = minMs;
    this.attempt++;
    this.h.down(this.attempt, delay, this.failedBeforeReady);
    this.timer = setTimeout(() => this.connectNow(), delay);
  }

  // Sends a frame; false when not connected (the caller keeps it).
  send(obj) {
    if (!this.ws || !this.ready || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(obj));
    return true;
  }
}
