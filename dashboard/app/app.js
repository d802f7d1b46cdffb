// Heatmap dashboard: a client's screen as a map of one event type (or the scroll reach) for one
// device and time, drawn with heatmap.js over the screen's screenshot; optionally side by side with
// another period or device and their difference. The view lives in the URL query so it can be
// shared; the read key lives in sessionStorage, never in the URL. Views that can still change
// (the API answers them with Cache-Control: no-cache) refresh themselves in place.
"use strict";

const STAGE_WIDTH = 300;
const KEY_STORAGE = "heatmap.readKey";
const HOUR_MS = 3600000;
const DAY_MS = 24 * HOUR_MS;
// The adjective of each grain: the endpoint's name and the legend's word.
const GRAIN_WORD = { hour: "hourly", day: "daily", week: "weekly" };
const GRAIN_MS = { hour: HOUR_MS, day: DAY_MS, week: 7 * DAY_MS };
// Tabs: the event type each one asks the API for; the scroll tab reads the scroll endpoints.
const VIEW_TYPE = { all: "all", moves: "mousemove", clicks: "click", rage: "rageclick", scroll: null };
const VIEW_NAME = { all: "All events", moves: "Moves", clicks: "Clicks", rage: "Rage clicks", scroll: "Scroll depth" };
// Presets end with the day (or hour) in progress: [start, end) on UTC boundaries.
const PRESETS = {
  "last-hour": (hour) => [hour - HOUR_MS, hour + HOUR_MS],
  today: (_, day) => [day, day + DAY_MS],
  "7d": (_, day) => [day - 6 * DAY_MS, day + DAY_MS],
  "30d": (_, day) => [day - 29 * DAY_MS, day + DAY_MS],
};
const DEFAULT_GRAIN = "7d";
const DEFAULT_REFRESH_S = 30;
const ACTIVITY_MAX_HOURS = 31 * 24;  // the strip shows at most the last 31 days of a longer range
const MARK_EVERY = 10;  // scroll map: a percentage mark every tenth of the screen's depth
const DIFF_COLOURS = { up: [215, 48, 39], down: [69, 117, 180] };  // B hotter, A hotter

const $ = (id) => document.getElementById(id);
const ui = {
  client: $("client"), screen: $("screen"), grain: $("grain"), bucket: $("bucket"),
  from: $("from"), to: $("to"), device: $("device"), compare: $("compare"),
  from2: $("from2"), to2: $("to2"), device2: $("device2"),
  key: $("read-key"), keyField: $("key-field"), error: $("error"), freshness: $("freshness"),
  stage: $("stage"), file: $("screenshot-file"), uploadStatus: $("upload-status"), activity: $("activity"),
};
const tabs = Array.from(document.querySelectorAll("#tabs [role=tab]"));
// Side B picks from the same devices as side A (listed once, in index.html).
ui.device2.replaceChildren(...Array.from(ui.device.options, (option) => option.cloneNode(true)));
let view = "all";
let refreshSeconds = DEFAULT_REFRESH_S;
let screenshotUrl = null;
let screenshotOf = null;  // "client/screen" whose screenshot (or its absence) is shown: other views reuse it
let generation = 0;  // bumped by every render: a slower answer of an older view is dropped
let liveTimer = null;
let shown = null;  // what is drawn: { s, plan, a, b, text } (for export and live refresh)
const heatLayers = new Map();  // stage element -> { heatmap, width, height }: redrawn in place, no flicker

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}
// Something the person has to choose or fix in the form: shown as it is.
class InputError extends Error {}

// ---------------------------------------------------------------- API access

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (key) headers.set("X-Read-Key", key);
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch (err) {
    throw new ApiError(0, `Cannot reach the query API (${err.message}).`);
  }
  if (response.ok) return response;
  let detail = response.statusText;
  try { detail = (await response.json()).detail || detail; } catch (_) { /* not JSON */ }
  throw new ApiError(response.status, explain(response.status, detail));
}

function explain(status, detail) {
  if (status === 401) return "This API needs a read key: enter it above and press Show.";
  if (status === 403) return `The read key does not open this client (${detail}).`;
  if (status === 413) return "The screenshot is too large (5 MiB at most).";
  return `${detail} (HTTP ${status})`;
}

const getJson = async (path) => (await api(path)).json();
const query = (params) => new URLSearchParams(params).toString();

// A cells answer's three columns as one object per cell, which the views draw and export. An answer
// in the shape before 2026-11-27 (a list of cells) may still come from the browser's cache for a
// day (a final answer's max-age): it is used as it is.
const cellsOf = (columns) => (Array.isArray(columns)
  ? columns
  : columns.count.map((count, i) => ({ cell_x: columns.cell_x[i], cell_y: columns.cell_y[i], count })));

// A map answer with whether it can still change: the API says no-cache until its bucket is final.
async function getAnswer(path) {
  const response = await api(path);
  const text = await response.text();
  const body = JSON.parse(text);
  if (body.cells) body.cells = cellsOf(body.cells);
  return { body, text, live: /no-cache/.test(response.headers.get("Cache-Control") || "") };
}

// ---------------------------------------------------------------- selection and URL

function selection() {
  return {
    client: ui.client.value, screen: ui.screen.value, grain: ui.grain.value, bucket: ui.bucket.value,
    from: ui.from.value, to: ui.to.value, device: ui.device.value, view,
    compare: ui.compare.value, from2: ui.from2.value, to2: ui.to2.value, device2: ui.device2.value,
  };
}

function saveToUrl(s) {
  const params = { client: s.client, screen: s.screen, grain: s.grain };
  if (s.grain === "range") Object.assign(params, { from: utc(s.from), to: utc(s.to) });
  else if (GRAIN_WORD[s.grain] && s.bucket) params.bucket = s.bucket;
  if (s.view !== "all") params.view = s.view;
  if (s.device !== "all") params.device = s.device;
  if (s.compare === "period") Object.assign(params, { compare: "period", from2: utc(s.from2), to2: utc(s.to2) });
  if (s.compare === "device") Object.assign(params, { compare: "device", device2: s.device2 });
  if (refreshSeconds !== DEFAULT_REFRESH_S) params.refresh = String(refreshSeconds);
  history.replaceState(null, "", `?${query(params)}`);
}

// datetime-local values have no zone; the dashboard treats them as UTC.
const utc = (local) => (local ? `${local.length === 16 ? local + ":00" : local}Z` : "");
const local = (iso) => (iso ? iso.replace(/(\.\d+)?Z$/, "").slice(0, 16) : "");
const isoOf = (ms) => new Date(ms).toISOString().replace(/\.\d+Z$/, "Z");

function fillSelect(select, values, wanted, label = (v) => v) {
  select.replaceChildren(...values.map((v) => new Option(label(v), v)));
  // A shared link may name something the listing lacks (no data yet): keep it selectable.
  if (wanted && !values.includes(wanted)) select.add(new Option(label(wanted), wanted), 0);
  if (wanted) select.value = wanted;
}

function showFields() {
  const grain = ui.grain.value;
  const isRange = grain === "range";
  if (isRange && !ui.from.value && !ui.to.value) {
    // Default range: the last 24 whole hours.
    const end = Math.floor(Date.now() / HOUR_MS) * HOUR_MS;
    ui.to.value = local(isoOf(end));
    ui.from.value = local(isoOf(end - DAY_MS));
  }
  $("bucket-field").hidden = !GRAIN_WORD[grain];
  document.querySelectorAll(".range-field").forEach((el) => { el.hidden = !isRange; });
  document.querySelectorAll(".compare-period").forEach((el) => { el.hidden = ui.compare.value !== "period"; });
  document.querySelectorAll(".compare-device").forEach((el) => { el.hidden = ui.compare.value !== "device"; });
  tabs.forEach((tab) => {
    const selected = tab.dataset.view === view;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
  });
}

function bucketLabel(start, grain) {
  const s = start.replace("T", " ").replace(":00:00Z", ":00");
  if (grain === "hour") return `${s} UTC`;
  return `${grain === "week" ? "week of " : ""}${start.slice(0, 10)}`;
}

async function loadClients(wanted) {
  const { clients } = await getJson("/heatmap/clients");
  fillSelect(ui.client, clients, wanted);
}

async function loadScreens(wanted) {
  if (!ui.client.value) return fillSelect(ui.screen, [], wanted);
  const { screens, dimensions } = await getJson(`/heatmap/screens?${query({ client_id: ui.client.value })}`);
  const devices = Object.fromEntries(dimensions.map((d) => [d.screen_id, d.devices.join(", ")]));
  fillSelect(ui.screen, screens, wanted, (screen) => (devices[screen] ? `${screen} (${devices[screen]})` : screen));
}

async function loadBuckets(wanted) {
  const grain = ui.grain.value;
  if (!GRAIN_WORD[grain] || !ui.client.value || !ui.screen.value) return fillSelect(ui.bucket, [], wanted);
  const { buckets } = await getJson(
    `/heatmap/buckets?${query({ client_id: ui.client.value, screen_id: ui.screen.value, grain })}`,
  );
  fillSelect(ui.bucket, buckets.map((b) => b.start), wanted, (start) => bucketLabel(start, grain));
}

// ---------------------------------------------------------------- what to ask for

// Side A's time as [start, end) in ms, or null when no bucket is chosen yet.
function period(s) {
  if (PRESETS[s.grain]) {
    const now = Date.now();
    return PRESETS[s.grain](Math.floor(now / HOUR_MS) * HOUR_MS, Math.floor(now / DAY_MS) * DAY_MS);
  }
  if (s.grain === "range") return s.from && s.to ? [Date.parse(utc(s.from)), Date.parse(utc(s.to))] : null;
  if (!s.bucket) return null;
  const start = Date.parse(s.bucket);
  return [start, start + GRAIN_MS[s.grain]];
}

function mapPath(s, device, when, bucket) {
  const scroll = s.view === "scroll";
  const params = { client_id: s.client, screen_id: s.screen };
  if (!scroll) params.type = VIEW_TYPE[s.view];
  params.device = device;
  const base = scroll ? "/heatmap/scroll" : "/heatmap";
  if (bucket) {
    // One bucket reads its own row through its grain's endpoint (the legend says "one bucket").
    const day = s.bucket.slice(0, 10);
    const at = { hour: { dt: day, hour: Number(s.bucket.slice(11, 13)) }, day: { dt: day }, week: { week_start: day } }[s.grain];
    return `${base}/${GRAIN_WORD[s.grain]}?${query({ ...params, ...at })}`;
  }
  return `${base}/range?${query({ ...params, from: isoOf(when[0]), to: isoOf(when[1]) })}`;
}

// Where each side's map comes from: { when, a, b, whenB } (paths; b null without a comparison).
function plan(s) {
  const when = period(s);
  if (!s.client || !s.screen || !when) return null;
  const bucket = Boolean(GRAIN_WORD[s.grain]);
  const result = { when, a: mapPath(s, s.device, when, bucket), b: null, whenB: null };
  if (s.compare === "device") {
    result.b = mapPath(s, s.device2, when, bucket);
    result.whenB = when;
  } else if (s.compare === "period") {
    if (!s.from2 || !s.to2) throw new InputError("Choose when period B starts and ends.");
    result.whenB = [Date.parse(utc(s.from2)), Date.parse(utc(s.to2))];
    result.b = mapPath(s, s.device, result.whenB, false);
  }
  return result;
}

function describe(s, when, device) {
  const span = `${isoOf(when[0]).slice(0, 16).replace("T", " ")} – ${isoOf(when[1]).slice(0, 16).replace("T", " ")} UTC`;
  const deviceName = device === "all" ? "all devices" : device;
  return `${VIEW_NAME[s.view]} · ${deviceName} · ${span}`;
}

// ---------------------------------------------------------------- screenshot and stage size

async function loadScreenshot(s) {
  const target = `${s.client}/${s.screen}`;
  if (target === screenshotOf) return;
  screenshotOf = null;
  if (screenshotUrl) URL.revokeObjectURL(screenshotUrl);
  screenshotUrl = null;
  const shots = document.querySelectorAll(".shot");
  shots.forEach((img) => { img.hidden = true; img.removeAttribute("src"); });
  if (s.client && s.screen) {
    try {
      const blob = await (await api(`/screenshots/${encodeURIComponent(s.client)}/${encodeURIComponent(s.screen)}`)).blob();
      screenshotUrl = URL.createObjectURL(blob);
      for (const img of shots) {
        img.src = screenshotUrl;
        await img.decode();
        img.hidden = false;
      }
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 404)) throw err;  // 404: no screenshot, blank canvas
    }
  }
  screenshotOf = target;
}

function sizeStages(grid) {
  // The grid covers the whole screen, so every stage takes the screenshot's shape (else the grid's).
  const shot = $("screenshot");
  const ratio = shot.hidden ? grid.grid_h / grid.grid_w : shot.naturalHeight / shot.naturalWidth;
  document.querySelectorAll(".stage").forEach((stage) => {
    stage.style.width = `${STAGE_WIDTH}px`;
    stage.style.height = `${Math.round(STAGE_WIDTH * ratio)}px`;
  });
}

// ---------------------------------------------------------------- drawing

function drawHeat(stage, body, max) {
  const heat = stage.querySelector(".heat");
  const width = heat.clientWidth;
  const height = heat.clientHeight;
  let layer = heatLayers.get(stage);
  if (!layer || layer.width !== width || layer.height !== height) {
    // heatmap.js sizes its canvas once and restyles its container: a new size needs a new layer.
    const container = document.createElement("div");
    Object.assign(container.style, { width: `${width}px`, height: `${height}px` });
    heat.replaceChildren(container);
    const cell = Math.max(width / body.grid_w, height / body.grid_h);
    const heatmap = h337.create({ container, radius: Math.max(6, Math.round(2.5 * cell)), maxOpacity: 0.8 });
    layer = { heatmap, width, height };
    heatLayers.set(stage, layer);
  }
  const cellW = width / body.grid_w;
  const cellH = height / body.grid_h;
  layer.heatmap.setData({
    min: 0,
    max: Math.max(max, 1),
    data: body.cells.map((c) => ({
      x: Math.floor((c.cell_x + 0.5) * cellW), y: Math.floor((c.cell_y + 0.5) * cellH), value: c.count,
    })),
  });
}

// The colour of a depth reached by `share` of the views: red at all of them through blue; never reached: dark.
function reachColour(share) {
  if (share <= 0) return "rgba(0, 0, 0, 0.55)";
  return `hsla(${Math.round(240 * (1 - share))}, 90%, 50%, 0.45)`;
}

const percent = (share) => `${Math.round(share * 100)}%`;

function shareByRow(body) {
  const shares = new Array(body.grid_h).fill(0);
  body.rows.forEach((row) => { shares[row.depth_row] = row.share; });
  return shares;
}

function drawScroll(stage, body) {
  const layer = stage.querySelector(".scroll-layer");
  const canvas = layer.querySelector("canvas");
  const width = stage.clientWidth;
  const height = stage.clientHeight;
  Object.assign(canvas, { width, height });
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, width, height);
  const shares = shareByRow(body);
  const marks = [];
  if (body.views) {
    shares.forEach((share, row) => {
      const top = Math.round((row * height) / body.grid_h);
      ctx.fillStyle = reachColour(share);
      ctx.fillRect(0, top, width, Math.round(((row + 1) * height) / body.grid_h) - top);
    });
    for (let row = 0; row < body.grid_h; row += body.grid_h / MARK_EVERY) {
      const mark = document.createElement("span");
      mark.className = "mark";
      mark.style.top = `${(100 * row) / body.grid_h}%`;
      mark.textContent = percent(shares[row]);
      Object.assign(mark.dataset, { row: String(row), share: String(shares[row]) });
      marks.push(mark);
    }
  }
  layer.querySelector(".marks").replaceChildren(...marks);
  const fold = layer.querySelector(".fold");
  fold.hidden = !body.fold;
  if (body.fold) {
    fold.style.top = `${100 * body.fold.y_norm}%`;
    fold.dataset.row = String(body.fold.depth_row);
  }
}

const totalOf = (cells) => cells.reduce((sum, c) => sum + c.count, 0);
const maxOf = (cells) => cells.reduce((m, c) => Math.max(m, c.count), 0);
const cellKey = (c) => `${c.cell_x},${c.cell_y}`;

// Per cell of either side: its counts and shares of each side's total, and B's share minus A's.
function differences(a, b) {
  const totalA = totalOf(a.cells);
  const totalB = totalOf(b.cells);
  const rows = new Map();
  const row = (c) => rows.get(cellKey(c)) || rows.set(cellKey(c), { x: c.cell_x, y: c.cell_y, a: 0, b: 0 }).get(cellKey(c));
  a.cells.forEach((c) => { row(c).a = c.count; });
  b.cells.forEach((c) => { row(c).b = c.count; });
  return Array.from(rows.values(), (r) => {
    const shareA = totalA ? r.a / totalA : 0;
    const shareB = totalB ? r.b / totalB : 0;
    return { ...r, shareA, shareB, diff: shareB - shareA };
  }).sort((p, q) => p.y - q.y || p.x - q.x);
}

// Signed differences on the difference canvas: red where B's share is higher, blue where A's is,
// opacity by magnitude; `boxOf(item, width, height)` is the item's [x, y, w, h] in canvas pixels.
function drawDiff(items, boxOf, unit) {
  const stage = $("stage-diff");
  const canvas = $("diff");
  const width = stage.clientWidth;
  const height = stage.clientHeight;
  Object.assign(canvas, { width, height });
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, width, height);
  const changed = items.filter((item) => item.diff !== 0);
  const extreme = changed.reduce((m, item) => Math.max(m, Math.abs(item.diff)), 0);
  // Strongest last, so it wins where neighbours overlap.
  changed.sort((p, q) => Math.abs(p.diff) - Math.abs(q.diff)).forEach((item) => {
    const [red, green, blue] = item.diff > 0 ? DIFF_COLOURS.up : DIFF_COLOURS.down;
    ctx.fillStyle = `rgba(${red}, ${green}, ${blue}, ${0.25 + (0.7 * Math.abs(item.diff)) / extreme})`;
    ctx.fillRect(...boxOf(item, width, height));
  });
  const label = (share) => `${share > 0 ? "+" : share < 0 ? "−" : ""}${(100 * Math.abs(share)).toFixed(2)}% ${unit}`;
  $("diff-min").textContent = label(-extreme);
  $("diff-max").textContent = label(extreme);
  stage.dataset.extreme = String(extreme);
}

// Each cell spreads one cell around, to be seen at 3 px a cell.
function drawCellDiff(a, b) {
  const box = (r, width, height) => {
    const [w, h] = [width / a.grid_w, height / a.grid_h];
    return [(r.x - 1) * w, (r.y - 1) * h, 3 * w, 3 * h];
  };
  drawDiff(differences(a, b), box, "of total");
  $("caption-diff").textContent = "Difference: B's share minus A's share of each cell";
  $("diff-note").textContent = "Share of each side's total; red: B hotter, blue: A hotter.";
}

function drawScrollDiff(a, b) {
  const shareB = shareByRow(b);
  const rows = shareByRow(a).map((share, row) => ({ row, diff: shareB[row] - share }));
  const box = (r, width, height) => {
    const top = Math.round((r.row * height) / a.grid_h);
    return [0, top, width, Math.round(((r.row + 1) * height) / a.grid_h) - top];
  };
  drawDiff(rows, box, "of views");
  $("caption-diff").textContent = "Difference: B's share of views reaching each depth minus A's";
  $("diff-note").textContent = "Share of each side's views; red: more of B's views reach it, blue: more of A's.";
}

function describeSpans(spans) {
  if (!spans) return "one bucket";
  if (!spans.length) return "nothing (empty range)";
  const counts = {};
  spans.forEach((s) => { counts[s.grain] = (counts[s.grain] || 0) + s.buckets; });
  return ["week", "day", "hour"].filter((g) => counts[g]).map((g) => `${counts[g]} ${GRAIN_WORD[g]}`).join(", ") + " bucket(s)";
}

const format = (n) => n.toLocaleString("en-US");

function paint(s, a, b) {
  const scroll = s.view === "scroll";
  const compare = Boolean(b);
  sizeStages(a);
  $("panel-b").hidden = !compare;
  $("panel-diff").hidden = !compare;
  document.querySelectorAll(".heat").forEach((el) => { el.hidden = scroll; });
  document.querySelectorAll(".scroll-layer").forEach((el) => { el.hidden = !scroll; });
  $("cell-legend").hidden = scroll;
  $("scroll-legend").hidden = !scroll;
  $("diff-legend").hidden = !compare;
  document.querySelectorAll(".compare-only").forEach((el) => { el.hidden = !compare; });
  if (scroll) {
    drawScroll(ui.stage, a);
    $("views").textContent = format(a.views);
    $("fold-depth").textContent = a.fold ? `${percent(a.fold.y_norm)} down the screen (row ${a.fold.depth_row})` : "–";
    if (compare) {
      drawScroll($("stage-b"), b);
      $("views-b").textContent = format(b.views);
      drawScrollDiff(a, b);
    }
    return;
  }
  // Both sides on one scale, so the same colour means the same count.
  const max = Math.max(maxOf(a.cells), compare ? maxOf(b.cells) : 0);
  drawHeat(ui.stage, a, max);
  const total = totalOf(a.cells);
  $("max").textContent = $("legend-max").textContent = format(max);
  $("total").textContent = format(total);
  $("cells").textContent = format(a.cells.length);
  $("used").textContent = describeSpans(a.buckets);
  Object.assign(ui.stage.dataset, { max: String(max), total: String(total) });
  if (compare) {
    drawHeat($("stage-b"), b, max);
    $("total-b").textContent = format(totalOf(b.cells));
    drawCellDiff(a, b);
  }
}

// ---------------------------------------------------------------- activity strip

// The hours of the view (an hour's whole day, so its neighbours can be opened), at most the last 31 days.
async function drawActivity(s, when) {
  const scroll = s.view === "scroll";
  const [first, end] = s.grain === "hour" ? [Math.floor(when[0] / DAY_MS) * DAY_MS, Math.floor(when[0] / DAY_MS) * DAY_MS + DAY_MS] : when;
  const start = Math.max(first, end - ACTIVITY_MAX_HOURS * HOUR_MS);
  const { buckets } = await getJson(`/heatmap/buckets?${query({
    client_id: s.client, screen_id: s.screen, grain: "hour", device: s.device, type: scroll ? "all" : VIEW_TYPE[s.view],
  })}`);
  const perHour = new Map(buckets.map((b) => [Date.parse(b.start), scroll ? b.views : b.total]));
  let peak = 0;
  for (let hour = start; hour < end; hour += HOUR_MS) peak = Math.max(peak, perHour.get(hour) || 0);
  const what = scroll ? "page views" : "events";
  const bars = [];
  for (let hour = start; hour < end; hour += HOUR_MS) {
    const count = perHour.get(hour) || 0;
    const label = `${isoOf(hour).slice(0, 13).replace("T", " ")}:00 UTC: ${format(count)} ${what}`;
    const bar = document.createElement(count ? "button" : "span");
    bar.className = count ? "bar" : "bar empty";
    if (s.grain === "hour" && hour === when[0]) bar.classList.add("current");
    bar.style.setProperty("--level", String(peak ? count / peak : 0));
    bar.title = label;
    if (count) {
      bar.type = "button";
      bar.setAttribute("aria-label", `${label}; open this hour`);
      Object.assign(bar.dataset, { hour: isoOf(hour), count: String(count) });
    }
    bars.push(bar);
  }
  ui.activity.replaceChildren(...bars);
  const clipped = start > first ? " (the last 31 days)" : "";
  $("activity-title").firstChild.textContent = `${scroll ? "Page views" : "Events"} per hour `;
  $("activity-note").textContent = peak ? `peak ${format(peak)}${clipped}` : `none in this period${clipped}`;
}

ui.activity.addEventListener("click", (event) => {
  const bar = event.target.closest("button.bar");
  if (!bar) return;
  act(async () => {
    ui.grain.value = "hour";
    showFields();
    await loadBuckets(bar.dataset.hour);
    await render();
  });
});

// ---------------------------------------------------------------- live refresh and freshness

async function noteFreshness(s, when, live) {
  const { materialized_at: at } = await getJson(`/heatmap/freshness?${query({
    client_id: s.client, from: isoOf(when[0]), to: isoOf(when[1]),
  })}`);
  const written = at ? `data written ${at.replace("T", " ").replace(/(\.\d+)?(Z|\+00:00)$/, "")} UTC` : "no data written yet";
  const checked = new Date().toISOString().slice(11, 19);
  ui.freshness.textContent = live
    ? `Live: this period can still change; refreshes every ${refreshSeconds} s (checked ${checked} UTC) · ${written}`
    : `Final: this period can no longer change · ${written}`;
  ui.freshness.dataset.live = String(live);
  ui.freshness.dataset.materializedAt = at || "";
}

async function fetchSides(route) {
  const [a, b] = await Promise.all([getAnswer(route.a), route.b ? getAnswer(route.b) : null]);
  return { a, b, text: a.text + (b ? b.text : ""), live: a.live || Boolean(b && b.live) };
}

function scheduleRefresh(mine, live) {
  clearTimeout(liveTimer);
  if (live) liveTimer = setTimeout(() => refresh(mine), refreshSeconds * 1000);
}

// Re-ask the same questions; redraw in place only when an answer changed (the browser revalidates
// with the ETag, so an unchanged map costs a 304).
async function refresh(mine) {
  if (mine !== generation) return;
  const { s } = shown;
  let answers = null;
  try {
    // A preset moves with the clock (the last hour after the hour turns); a chosen time stays.
    const route = PRESETS[s.grain] ? plan(s) : shown.route;
    answers = await fetchSides(route);
    if (mine !== generation) return;
    if (answers.text !== shown.text || route.a !== shown.route.a) {
      captions(s, route);
      paint(s, answers.a.body, answers.b && answers.b.body);
      Object.assign(shown, { route, a: answers.a.body, b: answers.b && answers.b.body, text: answers.text });
      await drawActivity(s, route.when);
    }
    await noteFreshness(s, route.when, answers.live);
    ui.error.hidden = true;
  } catch (err) {
    showError(err);
  }
  if (mine === generation) scheduleRefresh(mine, answers ? answers.live : true);
}

// ---------------------------------------------------------------- render

function captions(s, route) {
  $("caption-a").textContent = `${route.b ? "A: " : ""}${describe(s, route.when, s.device)}`;
  if (route.b) $("caption-b").textContent = `B: ${describe(s, route.whenB, s.compare === "device" ? s.device2 : s.device)}`;
}

async function render() {
  const mine = ++generation;
  clearTimeout(liveTimer);
  const s = selection();
  showFields();
  saveToUrl(s);
  await loadScreenshot(s);
  const route = plan(s);
  if (!route) {
    shown = null;
    ui.activity.replaceChildren();
    ui.freshness.textContent = "";
    return;
  }
  const answers = await fetchSides(route);
  if (mine !== generation) return;
  captions(s, route);
  paint(s, answers.a.body, answers.b && answers.b.body);
  shown = { s, route, a: answers.a.body, b: answers.b && answers.b.body, text: answers.text };
  await Promise.all([drawActivity(s, route.when), noteFreshness(s, route.when, answers.live)]);
  scheduleRefresh(mine, answers.live);
}

// ---------------------------------------------------------------- export

function download(blob, name) {
  const link = Object.assign(document.createElement("a"), { href: URL.createObjectURL(blob), download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

function exportName(extension) {
  const s = shown.s;
  return `heatmap-${s.client}-${s.screen}-${s.view}-${s.device}-${isoOf(shown.route.when[0]).slice(0, 13)}.${extension}`;
}

function csvOf() {
  const { s, a, b } = shown;
  if (s.view === "scroll") {
    const lines = ["side,depth_row,y_norm,reached,share,folds"];
    [["A", a], ["B", b]].filter(([, body]) => body).forEach(([side, body]) => {
      body.rows.forEach((r) => lines.push([side, r.depth_row, r.y_norm, r.reached, r.share, r.folds].join(",")));
    });
    return lines;
  }
  if (!b) return ["cell_x,cell_y,count", ...a.cells.map((c) => [c.cell_x, c.cell_y, c.count].join(","))];
  return [
    "cell_x,cell_y,count_a,count_b,share_a,share_b,share_difference",
    ...differences(a, b).map((r) => [r.x, r.y, r.a, r.b, r.shareA, r.shareB, r.diff].join(",")),
  ];
}

const visible = (el) => !el.closest("[hidden]");

// The visible panels as one image: screenshot, then each overlay, its caption and marks, then the legend.
async function exportPng() {
  const panels = Array.from(document.querySelectorAll(".panel")).filter(visible);
  const { clientWidth: width, clientHeight: height } = ui.stage;
  const pad = 16;
  const captionH = 22;
  const legendH = 96;
  const canvas = document.createElement("canvas");
  canvas.width = pad + panels.length * (width + pad);
  canvas.height = pad + captionH + height + pad + legendH;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.font = "12px system-ui, sans-serif";
  panels.forEach((panel, i) => {
    const x = pad + i * (width + pad);
    const y = pad + captionH;
    ctx.fillStyle = "#222";
    ctx.fillText(panel.querySelector("figcaption").textContent, x, pad + 12, width);
    ctx.strokeStyle = "#ccc";
    ctx.strokeRect(x - 0.5, y - 0.5, width + 1, height + 1);
    const shot = panel.querySelector(".shot");
    if (visible(shot)) ctx.drawImage(shot, x, y, width, height);
    panel.querySelectorAll(".heat canvas, .scroll-layer canvas, #diff").forEach((layer) => {
      if (visible(layer)) ctx.drawImage(layer, x, y, width, height);
    });
    panel.querySelectorAll(".mark").forEach((mark) => {
      if (!visible(mark)) return;
      const top = y + (Number(mark.dataset.row) / shown.a.grid_h) * height;
      ctx.fillStyle = "#fff";
      ctx.fillRect(x + width - 44, top, 44, 16);
      ctx.fillStyle = "#222";
      ctx.fillText(mark.textContent, x + width - 40, top + 12);
    });
    const fold = panel.querySelector(".fold");
    if (visible(fold)) {
      const top = y + (Number(fold.dataset.row) / shown.a.grid_h) * height;
      ctx.fillStyle = "#111";
      ctx.fillRect(x, top - 1, width, 2);
      ctx.fillText("fold", x + 4, top - 4);
    }
  });
  drawLegend(ctx, pad, pad + captionH + height + pad, canvas.width - 2 * pad);
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
  download(blob, exportName("png"));
}

function drawLegend(ctx, x, y, width) {
  const scroll = shown.s.view === "scroll";
  const barW = Math.min(240, width);
  const gradient = ctx.createLinearGradient(x, 0, x + barW, 0);
  if (scroll) {
    [0, 0.25, 0.5, 0.75, 1].forEach((share) => gradient.addColorStop(share, reachColour(Math.max(share, 0.001))));
  } else {
    [[0, "rgba(0,0,255,0)"], [0.25, "rgb(0,0,255)"], [0.55, "rgb(0,255,0)"], [0.85, "yellow"], [1, "rgb(255,0,0)"]]
      .forEach(([stop, colour]) => gradient.addColorStop(stop, colour));
  }
  ctx.fillStyle = gradient;
  ctx.fillRect(x, y, barW, 12);
  ctx.fillStyle = "#222";
  const lines = scroll
    ? [`0% … 100% of views reach`, `Page views: ${$("views").textContent}`, `Median fold: ${$("fold-depth").textContent}`]
    : [`0 … ${$("max").textContent} per cell`, `Total: ${$("total").textContent} · cells: ${$("cells").textContent}`];
  if (shown.b) lines.push(`difference ${$("diff-min").textContent} … ${$("diff-max").textContent}`);
  if (shown.b && !scroll) lines.push(`B total: ${$("total-b").textContent}`);
  lines.forEach((line, i) => ctx.fillText(line, x, y + 28 + i * 16, width));
}

// ---------------------------------------------------------------- wiring

function showError(err) {
  const plain = err instanceof ApiError || err instanceof InputError;
  ui.error.textContent = plain ? err.message : `Something went wrong: ${err.message}`;
  ui.error.hidden = false;
  if (err instanceof ApiError && (err.status === 401 || err.status === 403)) ui.keyField.hidden = false;
  ui.stage.dataset.state = "error";
}

// Every user action runs through here: one error line, cleared on the next success.
async function act(step) {
  ui.stage.dataset.state = "busy";
  try {
    await step();
    ui.error.hidden = true;
    ui.stage.dataset.state = "ready";
  } catch (err) {
    showError(err);
  }
}

async function start() {
  const wanted = Object.fromEntries(new URLSearchParams(location.search));
  ui.grain.value = wanted.grain || DEFAULT_GRAIN;
  if (!ui.grain.value) ui.grain.value = DEFAULT_GRAIN;  // an unknown grain in a link
  view = VIEW_NAME[wanted.view] ? wanted.view : "all";
  ui.device.value = wanted.device || "all";
  ui.compare.value = wanted.compare || "";
  ui.device2.value = wanted.device2 || "mobile";
  ui.from.value = local(wanted.from);
  ui.to.value = local(wanted.to);
  ui.from2.value = local(wanted.from2);
  ui.to2.value = local(wanted.to2);
  refreshSeconds = Math.max(1, Number(wanted.refresh) || DEFAULT_REFRESH_S);
  ui.key.value = sessionStorage.getItem(KEY_STORAGE) || "";
  showFields();
  await loadClients(wanted.client);
  await loadScreens(wanted.screen);
  await loadBuckets(wanted.bucket);
  await render();
}

// Period B defaults to the period just before A, of the same length.
function defaultPeriodB() {
  if (ui.compare.value !== "period" || (ui.from2.value && ui.to2.value)) return;
  const when = period(selection());
  if (!when) return;
  const length = when[1] - when[0];
  ui.from2.value = local(isoOf(when[0] - length));
  ui.to2.value = local(isoOf(when[0]));
}

function selectTab(tab) {
  view = tab.dataset.view;
  tab.focus();
  act(render);
}

tabs.forEach((tab, i) => {
  tab.addEventListener("click", () => selectTab(tab));
  tab.addEventListener("keydown", (event) => {
    const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
    if (step) selectTab(tabs[(i + step + tabs.length) % tabs.length]);
  });
});
ui.client.addEventListener("change", () => act(async () => { await loadScreens(); await loadBuckets(); await render(); }));
ui.screen.addEventListener("change", () => act(async () => { await loadBuckets(); await render(); }));
ui.grain.addEventListener("change", () => act(async () => { showFields(); await loadBuckets(); await render(); }));
ui.bucket.addEventListener("change", () => act(render));
ui.device.addEventListener("change", () => act(render));
ui.device2.addEventListener("change", () => act(render));
ui.compare.addEventListener("change", () => act(async () => { defaultPeriodB(); await render(); }));
$("controls").addEventListener("submit", (event) => {
  event.preventDefault();
  if (ui.key.value) sessionStorage.setItem(KEY_STORAGE, ui.key.value);
  else sessionStorage.removeItem(KEY_STORAGE);
  screenshotOf = null;  // another key may open another screenshot
  // The form's view (a range typed in) into the URL, unless nothing could be listed yet (no key): then the link's.
  if (ui.client.value) saveToUrl(selection());
  act(start);
});
$("export-png").addEventListener("click", () => act(async () => {
  if (!shown) throw new InputError("Nothing to export yet: choose a screen and a time.");
  await exportPng();
}));
$("export-csv").addEventListener("click", () => act(async () => {
  if (!shown) throw new InputError("Nothing to export yet: choose a screen and a time.");
  download(new Blob([csvOf().join("\n") + "\n"], { type: "text/csv" }), exportName("csv"));
}));
$("upload").addEventListener("submit", (event) => {
  event.preventDefault();
  act(async () => {
    const file = ui.file.files[0];
    const s = selection();
    if (!file) throw new InputError("Choose an image file first.");
    if (!s.client || !s.screen) throw new InputError("Choose a client and a screen first.");
    await api(`/screenshots/${encodeURIComponent(s.client)}/${encodeURIComponent(s.screen)}`, {
      method: "PUT", body: file, headers: { "Content-Type": file.type || "application/octet-stream" },
    });
    ui.uploadStatus.textContent = `Uploaded ${file.name}.`;
    screenshotOf = null;
    await render();
  });
});

act(start);
