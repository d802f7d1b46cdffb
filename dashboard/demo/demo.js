// Heatmap demo client: capture pointer and scroll events on #screen, batch them as v2 requests
// (with the page view), send them to the ingestion API.
// Plain JS, no dependencies. URL parameters override the defaults:
//   client_id, screen_id, write_key, endpoint (default /events/batch),
//   throttle_ms (default 16; 0 = every move), scroll_throttle_ms (default 250), flush_ms (default 1000).
"use strict";

(() => {
  const params = new URLSearchParams(location.search);
  const FLUSH_MS = Number(params.get("flush_ms") ?? 1000);
  const MAX_BATCH = 200;
  const THROTTLE_MS = Number(params.get("throttle_ms") ?? 16);
  const SCROLL_THROTTLE_MS = Number(params.get("scroll_throttle_ms") ?? 250);
  // Rage click (the one definition; docs/ARCHITECTURE.md quotes it): a burst is a run of clicks each
  // within RAGE_WINDOW_MS and RAGE_RADIUS_PX (screen CSS pixels, straight-line distance) of the burst's
  // first click; a click outside either bound starts a new burst. The RAGE_CLICKS-th click of a burst
  // emits one `rageclick` event at its own position, in addition to its `click`; later clicks of the
  // same burst emit none.
  const RAGE_CLICKS = 3;
  const RAGE_WINDOW_MS = 1000;
  const RAGE_RADIUS_PX = 30;
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

  const counters = { captured: 0, queued: 0, sent: 0, acknowledged: 0, rejected: 0, retries: 0, beaconed: 0, batches: 0, rageclicks: 0 };
  let queue = [];
  // Batches waiting for a retry, by batch_id, so a page that goes hidden can still beacon them.
  const waiting = new Map();

  // ---------------------------------------------------------------- capture

  const ctx = canvas.getContext("2d");
  function sizeCanvas() {
    // Setting a canvas's size clears it: only when the screen's size really changed.
    if (canvas.width !== screen.clientWidth) canvas.width = screen.clientWidth;
    if (canvas.height !== screen.clientHeight) canvas.height = screen.clientHeight;
  }
  sizeCanvas();

  const clamp01 = (v) => Math.min(1, Math.max(0, v));
  const timeOf = (timeStamp) => new Date(performance.timeOrigin + timeStamp).toISOString();

  function pointerEvent(ev, type) {
    // Normalized against the screen's own box, so page scroll and layout offsets do not matter.
    const rect = screen.getBoundingClientRect();
    return {
      event_time: timeOf(ev.timeStamp),
      x_norm: clamp01((ev.clientX - rect.left) / rect.width),
      y_norm: clamp01((ev.clientY - rect.top) / rect.height),
      event_type: type,
    };
  }

  // How deep the view reaches: the viewport's bottom edge on the screen, 0 (top) to 1 (bottom).
  function scrollDepth() {
    const rect = screen.getBoundingClientRect();
    return clamp01((window.innerHeight - rect.top) / rect.height);
  }

  // How each captured event is drawn on the screen: a dot per move or click, a ring per rage click,
  // a line across the screen per scroll depth.
  const MARKS = {
    mousemove: { color: "rgba(30,90,200,0.5)", radius: 2 },
    click: { color: "rgba(220,40,40,0.9)", radius: 4 },
    rageclick: { color: "rgba(150,0,150,0.9)", radius: 12 },
    scroll: { color: "rgba(20,140,60,0.8)" },
  };
  function draw(event) {
    const { color, radius } = MARKS[event.event_type];
    const x = event.x_norm * canvas.width;
    const y = event.y_norm * canvas.height;
    ctx.fillStyle = ctx.strokeStyle = color;
    ctx.lineWidth = 3;
    if (event.event_type === "scroll") return ctx.fillRect(0, y - 1, canvas.width, 2);
    ctx.beginPath();
    ctx.arc(x, y, radius, 0, 2 * Math.PI);
    if (event.event_type === "rageclick") ctx.stroke();
    else ctx.fill();
  }

  function keep(event) {
    queue.push(event);
    counters.captured += 1;
    draw(event);
    if (queue.length >= MAX_BATCH) flush();
    render();
  }

  // Keeps at most one event per interval, with a trailing call so the last event offered (where the
  // pointer stops, how far the page was scrolled) is always kept.
  function throttled(intervalMs) {
    let lastKept = -Infinity;
    let pending = null;
    let timer = null;
    function flushPending() {
      clearTimeout(timer);
      timer = null;
      if (pending) {
        keep(pending);
        pending = null;
        lastKept = performance.now();
      }
    }
    function offer(event) {
      const now = performance.now();
      if (now - lastKept >= intervalMs) {
        clearTimeout(timer);
        timer = null;
        pending = null;
        lastKept = now;
        keep(event);
      } else {
        pending = event;
        timer ??= setTimeout(flushPending, intervalMs - (now - lastKept));
      }
    }
    return { offer, flushPending };
  }

  const moves = throttled(THROTTLE_MS);
  screen.addEventListener("mousemove", (ev) => moves.offer(pointerEvent(ev, "mousemove")));

  let burst = []; // the clicks of the current burst: {time, x, y} in ms and screen pixels
  function isRageClick(ev) {
    const rect = screen.getBoundingClientRect();
    const click = { time: ev.timeStamp, x: ev.clientX - rect.left, y: ev.clientY - rect.top };
    const first = burst[0];
    const inBurst =
      first && click.time - first.time <= RAGE_WINDOW_MS && Math.hypot(click.x - first.x, click.y - first.y) <= RAGE_RADIUS_PX;
    burst = inBurst ? [...burst, click] : [click];
    return burst.length === RAGE_CLICKS;
  }

  // Touch taps arrive here as click events too (the browser synthesizes them).
  screen.addEventListener("click", (ev) => {
    moves.flushPending(); // the move to the click's spot goes first
    keep(pointerEvent(ev, "click"));
    if (isRageClick(ev)) {
      counters.rageclicks += 1;
      keep(pointerEvent(ev, "rageclick"));
    }
  });

  // Scroll: only a view reaching deeper than before is news; the first event is the depth at load
  // (kept at the end of this file, once everything is set up), so every view has one. x_norm is not
  // a place for a scroll event.
  const scrolls = throttled(SCROLL_THROTTLE_MS);
  let deepest = scrollDepth();
  const scrollEvent = (depth, timeStamp) => ({ event_time: timeOf(timeStamp), x_norm: 0.5, y_norm: depth, event_type: "scroll" });
  window.addEventListener("scroll", (ev) => {
    const depth = scrollDepth();
    if (depth <= deepest) return;
    deepest = depth; // never shallower than what is kept or pending, so the trailing event is the deepest
    scrolls.offer(scrollEvent(depth, ev.timeStamp));
  }, { passive: true });

  // The page view sent with every batch: a random id per page load and the sizes as they are now.
  const viewId = uuid4().replaceAll("-", "");
  function pageView() {
    const rect = screen.getBoundingClientRect();
    return {
      view_id: viewId,
      viewport_w: window.innerWidth,
      viewport_h: window.innerHeight,
      screen_w: Math.max(1, Math.round(rect.width)),
      screen_h: Math.max(1, Math.round(rect.height)),
    };
  }

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
    return { client_id: fields.client_id.value, screen_id: fields.screen_id.value, batch_id: uuid4(), view: pageView(), events };
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
    moves.flushPending();
    scrolls.flushPending();
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
      $("count-depth").textContent = `${Math.round(deepest * 100)}%`;
      $("status").textContent = statusText;
    });
  }
  window.addEventListener("resize", sizeCanvas);

  keep(scrollEvent(deepest, performance.now()));
})();
