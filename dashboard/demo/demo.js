// Heatmap demo client: capture pointer events on #screen, batch them, send them to the ingestion API.
// Plain JS, no dependencies. URL parameters override the defaults:
//   client_id, screen_id, write_key, endpoint (default /events/batch),
//   throttle_ms (default 16; 0 = every event), flush_ms (default 1000).
"use strict";

(() => {
  const params = new URLSearchParams(location.search);
  const FLUSH_MS = Number(params.get("flush_ms") ?? 1000);
  const MAX_BATCH = 200;
  const THROTTLE_MS = Number(params.get("throttle_ms") ?? 16);
  const BACKOFF_BASE_MS = 500;
  const BACKOFF_MAX_MS = 30000;
  const MAX_ATTEMPTS = 8;
  const endpoint = params.get("endpoint") || "/events/batch";

  const $ = (id) => document.getElementById(id);
  const screen = $("screen");
  const canvas = $("trail");
  const fields = { client_id: $("client-id"), screen_id: $("screen-id"), write_key: $("write-key") };
  for (const [name, input] of Object.entries(fields)) {
    if (params.has(name)) input.value = params.get(name);
  }
  $("endpoint").textContent = endpoint;

  const counters = { captured: 0, queued: 0, sent: 0, acknowledged: 0, rejected: 0, retries: 0, beaconed: 0, batches: 0 };
  let queue = [];
  // Batches waiting for a retry, by batch_id, so a page that goes hidden can still beacon them.
  const waiting = new Map();

  // ---------------------------------------------------------------- capture

  const ctx = canvas.getContext("2d");
  function sizeCanvas() {
    canvas.width = screen.clientWidth;
    canvas.height = screen.clientHeight;
  }
  sizeCanvas();

  const clamp01 = (v) => Math.min(1, Math.max(0, v));

  function toEvent(ev, type) {
    // Normalized against the screen's own box, so page scroll and layout offsets do not matter.
    const rect = screen.getBoundingClientRect();
    return {
      event_time: new Date(performance.timeOrigin + ev.timeStamp).toISOString(),
      x_norm: clamp01((ev.clientX - rect.left) / rect.width),
      y_norm: clamp01((ev.clientY - rect.top) / rect.height),
      event_type: type,
    };
  }

  function keep(event) {
    queue.push(event);
    counters.captured += 1;
    ctx.fillStyle = event.event_type === "click" ? "rgba(220,40,40,0.9)" : "rgba(30,90,200,0.35)";
    ctx.fillRect(event.x_norm * canvas.width - 1.5, event.y_norm * canvas.height - 1.5, 3, 3);
    if (queue.length >= MAX_BATCH) flush();
    render();
  }

  // Throttle with a trailing call, so the point where the pointer stops is always kept.
  let lastKept = -Infinity;
  let trailing = null;
  let trailingTimer = null;
  function keepTrailing() {
    clearTimeout(trailingTimer);
    trailingTimer = null;
    if (trailing) {
      keep(trailing);
      trailing = null;
      lastKept = performance.now();
    }
  }
  function onMove(ev) {
    const event = toEvent(ev, "mousemove");
    const now = performance.now();
    if (now - lastKept >= THROTTLE_MS) {
      clearTimeout(trailingTimer);
      trailingTimer = null;
      trailing = null;
      lastKept = now;
      keep(event);
    } else {
      trailing = event;
      trailingTimer ??= setTimeout(keepTrailing, THROTTLE_MS - (now - lastKept));
    }
  }

  screen.addEventListener("mousemove", onMove);
  screen.addEventListener("click", (ev) => {
    keepTrailing();
    keep(toEvent(ev, "click"));
  });

  // ---------------------------------------------------------------- send

  function uuid4() {
    if (crypto.randomUUID) return crypto.randomUUID();
    // crypto.randomUUID needs a secure context; plain-http hosts other than localhost get this.
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  function takeBatch() {
    const events = queue.splice(0, MAX_BATCH);
    return { client_id: fields.client_id.value, screen_id: fields.screen_id.value, batch_id: uuid4(), events };
  }

  function flush() {
    while (queue.length) {
      const batch = takeBatch();
      counters.sent += batch.events.length;
      counters.batches += 1;
      send(batch, 0);
    }
    render();
  }

  const retryable = (status) => status === 408 || status === 409 || status === 429 || status >= 500;

  async function send(batch, attempt) {
    const headers = { "Content-Type": "application/json" };
    if (fields.write_key.value) headers["X-Write-Key"] = fields.write_key.value;
    let response;
    try {
      // keepalive lets a request already under way finish when the page is closed.
      response = await fetch(endpoint, { method: "POST", headers, body: JSON.stringify(batch), keepalive: true });
    } catch (error) {
      return retry(batch, attempt, 0, `network error: ${error.message}`);
    }
    if (response.status === 202) {
      counters.acknowledged += batch.events.length;
      status(`batch of ${batch.events.length} acknowledged`);
    } else if (retryable(response.status)) {
      const after = Number(response.headers.get("Retry-After")) || 0;
      return retry(batch, attempt, after * 1000, `HTTP ${response.status}`);
    } else {
      counters.rejected += batch.events.length;
      const body = await response.json().catch(() => ({}));
      status(`batch rejected: HTTP ${response.status} ${body.detail ?? ""}`);
    }
    render();
  }

  function retry(batch, attempt, retryAfterMs, reason) {
    if (attempt + 1 >= MAX_ATTEMPTS) {
      counters.rejected += batch.events.length;
      status(`gave up on a batch after ${MAX_ATTEMPTS} attempts (${reason})`);
      render();
      return;
    }
    // Exponential backoff with jitter; the same batch_id makes the retry idempotent on the server.
    const backoff = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** attempt) * (0.5 + Math.random() / 2);
    const delay = Math.max(retryAfterMs, backoff);
    counters.retries += 1;
    status(`${reason}; retrying in ${(delay / 1000).toFixed(1)} s`);
    const timer = setTimeout(() => {
      waiting.delete(batch.batch_id);
      send(batch, attempt + 1);
    }, delay);
    waiting.set(batch.batch_id, { batch, timer });
    render();
  }

  // sendBeacon survives the page going away but cannot set headers: the key goes in the query string.
  function beacon(batch) {
    const key = fields.write_key.value;
    const url = key ? `${endpoint}${endpoint.includes("?") ? "&" : "?"}write_key=${encodeURIComponent(key)}` : endpoint;
    // text/plain keeps a cross-origin beacon a "simple" request (no preflight); the API reads the body as JSON.
    const sent = navigator.sendBeacon(url, new Blob([JSON.stringify(batch)], { type: "text/plain;charset=UTF-8" }));
    if (sent) counters.beaconed += batch.events.length;
    return sent;
  }

  function flushWithBeacon() {
    keepTrailing();
    for (const [id, { batch, timer }] of waiting) {
      if (beacon(batch)) {
        clearTimeout(timer);
        waiting.delete(id);
      }
    }
    while (queue.length) {
      const batch = takeBatch();
      if (!beacon(batch)) {
        queue = batch.events.concat(queue); // the browser refused (quota): keep them for later
        break;
      }
      counters.sent += batch.events.length;
      counters.batches += 1;
    }
    render();
  }

  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "hidden") flushWithBeacon();
  });
  window.addEventListener("pagehide", flushWithBeacon);
  setInterval(flush, FLUSH_MS);

  // ---------------------------------------------------------------- display

  let statusText = "idle";
  function status(text) {
    statusText = text;
  }

  let renderQueued = false;
  function render() {
    if (renderQueued) return;
    renderQueued = true;
    requestAnimationFrame(() => {
      renderQueued = false;
      counters.queued = queue.length;
      for (const [name, value] of Object.entries(counters)) $(`count-${name}`).textContent = value;
      $("status").textContent = statusText;
    });
  }
  window.addEventListener("resize", sizeCanvas);
})();
