// Heatmap dashboard: pick client, screen, granularity and bucket (or a range),
// draw the counts with heatmap.js over the screen's screenshot. The selection
// lives in the URL query so a view can be shared; the read key lives in
// sessionStorage, never in the URL.
"use strict";

const STAGE_WIDTH = 300;
const KEY_STORAGE = "heatmap.readKey";
// The adjective of each grain: the endpoint's name and the legend's word.
const GRAIN_WORD = { hour: "hourly", day: "daily", week: "weekly" };

const $ = (id) => document.getElementById(id);
const ui = {
  client: $("client"), screen: $("screen"), grain: $("grain"), bucket: $("bucket"),
  from: $("from"), to: $("to"), key: $("read-key"), keyField: $("key-field"),
  error: $("error"), stage: $("stage"), heat: $("heat"), shot: $("screenshot"),
  file: $("screenshot-file"), uploadStatus: $("upload-status"),
};
let screenshotUrl = null;
let screenshotOf = null;  // "client/screen" whose screenshot (or its absence) is shown: other views reuse it
let grid = null;  // { grid_w, grid_h } of the latest heatmap answer (every answer carries them); none before the first

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

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

// ---------------------------------------------------------------- selection and URL

function selection() {
  return {
    client: ui.client.value, screen: ui.screen.value, grain: ui.grain.value,
    bucket: ui.bucket.value, from: ui.from.value, to: ui.to.value,
  };
}

function saveToUrl() {
  const s = selection();
  const params = { client: s.client, screen: s.screen, grain: s.grain };
  if (s.grain === "range") Object.assign(params, { from: utc(s.from), to: utc(s.to) });
  else if (s.bucket) params.bucket = s.bucket;
  history.replaceState(null, "", `?${query(params)}`);
}

// datetime-local values have no zone; the dashboard treats them as UTC.
const utc = (local) => (local ? `${local.length === 16 ? local + ":00" : local}Z` : "");
const local = (iso) => (iso ? iso.replace(/(\.\d+)?Z$/, "").slice(0, 16) : "");

function fillSelect(select, values, wanted, label = (v) => v) {
  select.replaceChildren(...values.map((v) => new Option(label(v), v)));
  // A shared link may name something the listing lacks (no data yet): keep it selectable.
  if (wanted && !values.includes(wanted)) select.add(new Option(label(wanted), wanted), 0);
  if (wanted) select.value = wanted;
}

function showRangeFields() {
  const isRange = ui.grain.value === "range";
  if (isRange && !ui.from.value && !ui.to.value) {
    // Default range: the last 24 whole hours.
    const end = new Date();
    end.setUTCMinutes(0, 0, 0);
    ui.to.value = local(end.toISOString());
    ui.from.value = local(new Date(end - 86400000).toISOString());
  }
  $("bucket-field").hidden = isRange;
  document.querySelectorAll(".range-field").forEach((el) => { el.hidden = !isRange; });
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
  const { screens } = await getJson(`/heatmap/screens?${query({ client_id: ui.client.value })}`);
  fillSelect(ui.screen, screens, wanted);
}

async function loadBuckets(wanted) {
  const grain = ui.grain.value;
  if (grain === "range" || !ui.client.value || !ui.screen.value) return fillSelect(ui.bucket, [], wanted);
  const { buckets } = await getJson(
    `/heatmap/buckets?${query({ client_id: ui.client.value, screen_id: ui.screen.value, grain })}`,
  );
  const starts = buckets.map((b) => b.start);
  fillSelect(ui.bucket, starts, wanted, (start) => bucketLabel(start, grain));
}

// ---------------------------------------------------------------- drawing

function heatmapPath(s) {
  const ids = { client_id: s.client, screen_id: s.screen };
  if (s.grain === "range") return `/heatmap/range?${query({ ...ids, from: utc(s.from), to: utc(s.to) })}`;
  if (!s.bucket) return null;
  const day = s.bucket.slice(0, 10);
  const when = { hour: { dt: day, hour: Number(s.bucket.slice(11, 13)) }, day: { dt: day }, week: { week_start: day } }[s.grain];
  return `/heatmap/${GRAIN_WORD[s.grain]}?${query({ ...ids, ...when })}`;
}

async function loadScreenshot(s) {
  const target = `${s.client}/${s.screen}`;
  if (target === screenshotOf) return;
  screenshotOf = null;
  if (screenshotUrl) URL.revokeObjectURL(screenshotUrl);
  screenshotUrl = null;
  ui.shot.hidden = true;
  ui.shot.removeAttribute("src");
  if (!s.client || !s.screen) return;
  try {
    const blob = await (await api(`/screenshots/${encodeURIComponent(s.client)}/${encodeURIComponent(s.screen)}`)).blob();
    screenshotUrl = URL.createObjectURL(blob);
    ui.shot.src = screenshotUrl;
    await ui.shot.decode();
    ui.shot.hidden = false;
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 404)) throw err;  // 404: no screenshot, blank canvas
  }
  screenshotOf = target;
}

function sizeStage() {
  // The grid covers the whole screen, so the overlay takes the screenshot's shape (else the grid's).
  if (ui.shot.hidden && !grid) return;  // no answer yet: the stylesheet's size stands
  const ratio = ui.shot.hidden ? grid.grid_h / grid.grid_w : ui.shot.naturalHeight / ui.shot.naturalWidth;
  ui.stage.style.width = `${STAGE_WIDTH}px`;
  ui.stage.style.height = `${Math.round(STAGE_WIDTH * ratio)}px`;
}

function draw(cells) {
  // A fresh layer per view: heatmap.js sizes its canvas once and restyles its container.
  const width = ui.heat.clientWidth;
  const height = ui.heat.clientHeight;
  const layer = document.createElement("div");
  Object.assign(layer.style, { width: `${width}px`, height: `${height}px` });
  ui.heat.replaceChildren(layer);
  if (!grid) return 0;  // nothing asked yet, so nothing to draw
  const cellW = width / grid.grid_w;
  const cellH = height / grid.grid_h;
  const heatmap = h337.create({ container: layer, radius: Math.max(6, Math.round(2.5 * Math.max(cellW, cellH))), maxOpacity: 0.8 });
  const max = cells.reduce((m, c) => Math.max(m, c.count), 0);
  heatmap.setData({
    min: 0,
    max: Math.max(max, 1),
    data: cells.map((c) => ({
      x: Math.floor((c.cell_x + 0.5) * cellW), y: Math.floor((c.cell_y + 0.5) * cellH), value: c.count,
    })),
  });
  return max;
}

function describeSpans(spans) {
  if (!spans) return "one bucket";
  if (!spans.length) return "nothing (empty range)";
  const counts = {};
  spans.forEach((s) => { counts[s.grain] = (counts[s.grain] || 0) + s.buckets; });
  return ["week", "day", "hour"].filter((g) => counts[g]).map((g) => `${counts[g]} ${GRAIN_WORD[g]}`).join(", ") + " bucket(s)";
}

function legend(body, max) {
  const total = body.cells.reduce((sum, c) => sum + c.count, 0);
  const format = (n) => n.toLocaleString("en-US");
  $("max").textContent = $("legend-max").textContent = format(max);
  $("total").textContent = format(total);
  $("cells").textContent = format(body.cells.length);
  $("used").textContent = describeSpans(body.buckets);
  Object.assign(ui.stage.dataset, { max: String(max), total: String(total) });
}

async function render() {
  const s = selection();
  saveToUrl();
  await loadScreenshot(s);
  const path = heatmapPath(s);
  const body = path ? await getJson(path) : { cells: [] };
  if (path) grid = { grid_w: body.grid_w, grid_h: body.grid_h };
  sizeStage();
  legend(body, draw(body.cells));
  ui.stage.dataset.state = "ready";
}

// ---------------------------------------------------------------- wiring

function showError(err) {
  ui.error.textContent = err instanceof ApiError ? err.message : `Something went wrong: ${err.message}`;
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
  } catch (err) {
    showError(err);
  }
}

async function start() {
  const wanted = Object.fromEntries(new URLSearchParams(location.search));
  if (wanted.grain) ui.grain.value = wanted.grain;
  ui.from.value = local(wanted.from);
  ui.to.value = local(wanted.to);
  ui.key.value = sessionStorage.getItem(KEY_STORAGE) || "";
  showRangeFields();
  await loadClients(wanted.client);
  await loadScreens(wanted.screen);
  await loadBuckets(wanted.bucket);
  await render();
}

ui.client.addEventListener("change", () => act(async () => { await loadScreens(); await loadBuckets(); await render(); }));
ui.screen.addEventListener("change", () => act(async () => { await loadBuckets(); await render(); }));
ui.grain.addEventListener("change", () => act(async () => { showRangeFields(); await loadBuckets(); await render(); }));
ui.bucket.addEventListener("change", () => act(render));
$("controls").addEventListener("submit", (event) => {
  event.preventDefault();
  if (ui.key.value) sessionStorage.setItem(KEY_STORAGE, ui.key.value);
  else sessionStorage.removeItem(KEY_STORAGE);
  screenshotOf = null;  // another key may open another screenshot
  act(start);
});
$("upload").addEventListener("submit", (event) => {
  event.preventDefault();
  act(async () => {
    const file = ui.file.files[0];
    const s = selection();
    if (!file) throw new Error("choose an image file first");
    if (!s.client || !s.screen) throw new Error("choose a client and a screen first");
    await api(`/screenshots/${encodeURIComponent(s.client)}/${encodeURIComponent(s.screen)}`, {
      method: "PUT", body: file, headers: { "Content-Type": file.type || "application/octet-stream" },
    });
    ui.uploadStatus.textContent = `Uploaded ${file.name}.`;
    screenshotOf = null;
    await render();
  });
});

act(start);
