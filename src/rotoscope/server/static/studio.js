// rotoscope studio: plain JS over the HTTP API (no framework, no CDN).
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = { filters: [], selected: null, file: null, follow: null, source: null, history: [], previewStep: null,
                paints: 0, abort: null, painted: null, jobs: "" };

// ---------------------------------------------------------------- API access (token kept in localStorage)

function token() { return localStorage.getItem("rotoscope-token") || ""; }
function withToken(url) { return token() ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token()) : url; }

async function api(path, opts = {}) {
  const headers = Object.assign({}, opts.headers || {});
  if (token()) headers["Authorization"] = "Bearer " + token();
  const res = await fetch(path, Object.assign({}, opts, { headers }));
  if (res.status === 401) { $("#token-form").hidden = false; throw new Error("this server needs an API token"); }
  if (!res.ok) {
    let msg = res.status + " " + res.statusText;
    try { const body = await res.json(); msg = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail); } catch (e) {}
    throw new Error(msg);
  }
  return res;
}

// The API's words, in the studio's: its refusals name form fields ("pass overwrite=true"), the page has checkboxes.
function studioWords(msg) {
  return msg.replace(/pass overwrite=true/g, "tick \u201cReplace a filter of that name\u201d")
    .replace(/resume=true continues it, overwrite=true starts afresh/g, "tick \u201cContinue an interrupted run of " +
      "that name\u201d to continue it, or \u201cReplace a filter of that name\u201d to start afresh")
    .replace(/overwrite=true/g, "\u201cReplace a filter of that name\u201d")
    .replace(/resume=true/g, "\u201cContinue an interrupted run of that name\u201d");
}

// An error is shown beside the control that caused it (`where`; the banner under the header for the page's own
// loading), and brought into view: at the top of a long page it was 2,300 px away from the button pressed.
function showError(e, where = "#error") {
  const el = $(where);
  el.textContent = e ? studioWords(String(e.message || e)) : "";
  el.hidden = !e;
  if (!e) return;
  const r = el.getBoundingClientRect();
  if (r.top < 0 || r.bottom > window.innerHeight) el.scrollIntoView({ block: "center" });
}

async function blobUrl(path) { const res = await api(path); return URL.createObjectURL(await res.blob()); }

$("#token-form").addEventListener("submit", (ev) => {
  ev.preventDefault(); localStorage.setItem("rotoscope-token", $("#token").value); $("#token-form").hidden = true; refresh();
});

// ---------------------------------------------------------------- gallery

function fmt(v) {
  if (v === undefined || v === null) return "–";
  return typeof v === "number" && !Number.isInteger(v) ? v.toPrecision(3) : String(v);
}

// a score in the filter's own units (its weights are its own): it says how training went, not which filter is best
const HELD_NOTE = "the score on photos it never trained on, in this filter's own units: filters trained with other " +
  "weights or backbones are not comparable by it";

async function loadFilters() {
  const res = await api("/api/filters");
  // the user's own filters first: they are what they came back for (the API lists by name)
  state.filters = (await res.json()).sort((a, b) => Number(a.shipped) - Number(b.shipped));
  const gallery = $("#gallery");
  gallery.innerHTML = "";
  if (!state.filters.length) gallery.innerHTML = '<p class="muted">No filters yet: train one below.</p>';
  for (const f of state.filters) {
    const card = document.createElement("div");
    card.className = "card" + (f.name === state.selected ? " selected" : "") + (f.shipped ? "" : " yours");
    card.dataset.name = f.name;
    card.tabIndex = 0;
    card.setAttribute("role", "button");
    card.setAttribute("aria-pressed", String(f.name === state.selected));
    const held = f.holdout_last ? `held-out loss ${fmt(f.holdout_last.total)}` : "";
    card.innerHTML = `<img alt="${f.name} preview"><div class="body">
      ${f.shipped ? "" : '<button class="plain del" title="delete this filter">delete</button>'}
      <div class="name"></div><div class="muted art"></div>
      <div class="muted">${fmt(f.backbone)} · ${fmt(f.steps)}&nbsp;steps · ${fmt(f.size)}&nbsp;px</div>
      <div class="muted" title="${HELD_NOTE}">${held}</div></div>`;
    card.querySelector(".name").textContent = f.name;
    card.querySelector(".art").textContent = f.artwork || "";
    card.addEventListener("click", () => selectFilter(f.name));
    card.addEventListener("keydown", (ev) => {
      if (ev.target === card && (ev.key === "Enter" || ev.key === " ")) { ev.preventDefault(); selectFilter(f.name); }
    });
    const del = card.querySelector(".del");
    if (del) del.addEventListener("click", async (ev) => {
      ev.stopPropagation();
      if (!confirm(`Delete filter '${f.name}'?`)) return;
      try { await api(`/api/filters/${encodeURIComponent(f.name)}`, { method: "DELETE" }); await loadFilters(); } catch (e) { showError(e, "#apply-error"); }
    });
    gallery.appendChild(card);
  }
  loadPreviews(state.filters.map((f) => [f.preview_url, gallery.querySelector(`.card[data-name="${CSS.escape(f.name)}"] img`)]));
  for (const sel of [$("#apply-filter"), $("#video-filter")]) {
    const keep = sel.value;
    sel.innerHTML = state.filters.map((f) => `<option>${f.name}</option>`).join("");
    if (state.filters.some((f) => f.name === keep)) sel.value = keep;
  }
  if (state.selected && state.filters.some((f) => f.name === state.selected)) $("#apply-filter").value = state.selected;
  updateApplyButton();
}

// Two previews at a time: the server paints each the first time it is asked, and 28 at once took every connection
// the browser has to the server, so the page said "connecting…" and a paint waited behind them all.
async function loadPreviews(todo) {
  const next = async () => {
    for (let item = todo.shift(); item; item = todo.shift()) {
      const [url, img] = item;
      try { img.src = await blobUrl(url); } catch (e) { /* a preview that fails leaves its grey box */ }
    }
  };
  await Promise.all([next(), next()]);
}

function selectFilter(name) {
  state.selected = name;
  $("#apply-filter").value = name;
  document.querySelectorAll(".card").forEach((c) => {
    c.classList.toggle("selected", c.dataset.name === name);
    c.setAttribute("aria-pressed", String(c.dataset.name === name));
  });
  updateApplyButton();
  markStale();
}

// ---------------------------------------------------------------- apply

function updateApplyButton() { $("#apply-btn").disabled = !(state.file && $("#apply-filter").value); }

// The settings a painting was made with; a painting whose settings are no longer the form's is dimmed and says so
// (changing the filter or the strength left the old painting beside the new settings, as if it were theirs).
function applySettings() {
  return { filter: $("#apply-filter").value, strength: $("#strength").value, preserve: $("#preserve").checked,
           size: $("#apply-size").value, keep: $("#keep").value };
}
function markStale() {
  if (!state.painted) return;
  const now = applySettings(), then = state.painted;
  const stale = Object.keys(now).some((k) => now[k] !== then[k]);
  $("#result-figure").classList.toggle("stale", stale);
  $("#result-caption").textContent = stale ? `painted with '${then.filter}' at ${Number(then.strength).toFixed(2)}: ` +
    "press Paint for the new settings" : "painted";
}

function takeFile(file) {
  if (!file) return;
  state.file = file;
  state.strokes = [];
  state.painted = null;
  $("#result-figure").classList.remove("stale");
  $("#result-caption").textContent = "painted";
  $("#original-caption").firstChild.textContent = "photo: drag over it to keep a region unpainted ";
  $("#apply-original").src = URL.createObjectURL(file);
  $("#apply-result").removeAttribute("src");
  $("#apply-result").alt = "";
  $("#apply-download").hidden = true;
  $("#apply-pair").hidden = false;
  $("#drop span").textContent = file.name;
  updateApplyButton();
  if ($("#apply-filter").value) paint();
}

const drop = $("#drop");
drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (ev) => { ev.preventDefault(); drop.classList.remove("over"); takeFile(ev.dataTransfer.files[0]); });
// the drop zone is a label: a click opens the file chooser, and Enter or Space on it does the same
drop.addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); $("#apply-file").click(); }
});
$("#apply-file").addEventListener("change", (ev) => takeFile(ev.target.files[0]));
$("#apply-filter").addEventListener("change", (ev) => selectFilter(ev.target.value));
$("#strength").addEventListener("input", (ev) => { $("#strength-value").textContent = Number(ev.target.value).toFixed(2); markStale(); });
for (const sel of ["#preserve", "#apply-size"]) $(sel).addEventListener("input", markStale);
$("#apply-btn").addEventListener("click", () => paint());
// a picture the browser cannot show (a TIFF, which the server paints all the same): said, instead of a broken box
$("#apply-original").addEventListener("error", () => {
  if (!state.file) return;
  $("#original-caption").firstChild.textContent = `this browser cannot show ${state.file.name}; it is painted all ` +
    "the same (drawing a region to keep needs a picture the browser shows: PNG, JPEG, WebP) ";
});

// Each paint supersedes the one before it: the older request is aborted and its answer, should it still come,
// ignored (a slow paint of a big photo that finished last replaced the newer painting on screen).
async function paint() {
  const name = $("#apply-filter").value;
  if (!state.file || !name) return;
  const seq = ++state.paints;
  if (state.abort) state.abort.abort();
  const abort = new AbortController();
  state.abort = abort;
  const asked = applySettings();
  const file = state.file;
  const form = new FormData();
  form.append("image", state.file);
  form.append("strength", $("#strength").value);
  form.append("preserve_colors", $("#preserve").checked ? "true" : "false");
  if ($("#apply-size").value) form.append("size", $("#apply-size").value);
  if ($("#keep").value) form.append("keep", $("#keep").value);
  const mask = await keepMask();
  if (mask) form.append("mask", mask, "mask.png");
  if (seq !== state.paints) return;  // superseded while the mask was made
  $("#apply-status").textContent = `painting with '${name}'… `;
  const stop = document.createElement("button");
  stop.className = "plain"; stop.type = "button"; stop.textContent = "stop";
  stop.onclick = () => { abort.abort(); state.paints++; $("#apply-status").textContent = "stopped"; };
  $("#apply-status").appendChild(stop);
  try {
    const res = await api(`/api/filters/${encodeURIComponent(name)}/apply`, { method: "POST", body: form,
                                                                              signal: abort.signal });
    const blob = await res.blob();
    if (seq !== state.paints) return;
    const url = URL.createObjectURL(blob);
    const img = $("#apply-result");
    img.src = url;
    img.dataset.filter = name;
    img.alt = `${file.name} painted with the filter '${name}'`;
    const dl = $("#apply-download");
    dl.href = url; dl.download = file.name.replace(/\.[^.]*$/, "") + "-" + name + ".png"; dl.hidden = false;
    state.painted = asked;
    markStale();
    $("#apply-status").textContent = `${res.headers.get("X-Rotoscope-Size") || ""} in ${res.headers.get("X-Rotoscope-Seconds") || "?"} s with '${name}'` + familiarity(res.headers);
    showError(null, "#apply-error");
  } catch (e) {
    if (seq !== state.paints) return;
    $("#apply-status").textContent = "";
    showError(e, "#apply-error");
  }
}

// The network has no confidence signal: what it has is how far the photo lies from its training photos.
function familiarity(headers) {
  const d = headers.get("X-Rotoscope-Distance"), t = headers.get("X-Rotoscope-Threshold");
  if (d === null || t === null) return "";
  const outside = headers.get("X-Rotoscope-Outside");  // one statistic beyond every training photo's
  const like = (headers.get("X-Rotoscope-In-Distribution") ?? String(Number(d) <= Number(t))) === "true";
  const dist = `distance ${Number(d).toFixed(2)}${Number(d) <= Number(t) ? "," : " >"} threshold ${Number(t).toFixed(2)}`;
  return like
    ? `; the photo is like its training photos in light, colour and detail (${dist})`
    : `; the photo is unlike its training photos (${dist}${outside ? `; ${outside.replaceAll("_", " ")}` : ""}): ` +
      "it has not been shown such pictures, check the result";
}

// ---------------------------------------------------------------- a region kept unpainted, drawn on the photo

// strokes are kept in the photo's own pixels; the mask sent is white (paint) with the strokes in black (keep)
const keepCanvas = $("#keep-canvas");
$("#apply-original").addEventListener("load", (ev) => {
  keepCanvas.width = ev.target.naturalWidth;
  keepCanvas.height = ev.target.naturalHeight;
  drawStrokes(keepCanvas.getContext("2d"), "rgba(255, 40, 40, 0.45)", false);
});
function brushWidth() { return Math.max(6, Math.round(Math.max(keepCanvas.width, keepCanvas.height) / 25)); }
function toPhoto(ev) {
  const r = keepCanvas.getBoundingClientRect();
  return [(ev.clientX - r.left) * keepCanvas.width / r.width, (ev.clientY - r.top) * keepCanvas.height / r.height];
}
function drawStrokes(ctx, colour, background) {
  ctx.clearRect(0, 0, ctx.canvas.width, ctx.canvas.height);
  if (background) { ctx.fillStyle = background; ctx.fillRect(0, 0, ctx.canvas.width, ctx.canvas.height); }
  ctx.strokeStyle = colour; ctx.lineCap = "round"; ctx.lineJoin = "round";
  for (const s of state.strokes || []) {
    ctx.lineWidth = s.width;
    ctx.beginPath();
    s.points.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    if (s.points.length === 1) ctx.lineTo(s.points[0][0] + 0.1, s.points[0][1]);
    ctx.stroke();
  }
  $("#keep-clear").hidden = !(state.strokes || []).length;
}
// a mouse or a pen draws at once; a finger only once "draw with a finger" is pressed (a swipe to scroll the page
// drew a stroke and started a repaint)
$("#keep-draw").addEventListener("click", () => {
  const on = !$(".paintable").classList.contains("drawing");
  $(".paintable").classList.toggle("drawing", on);
  $("#keep-draw").setAttribute("aria-pressed", String(on));
  $("#keep-draw").textContent = on ? "done drawing" : "draw with a finger";
});
keepCanvas.addEventListener("pointerdown", (ev) => {
  if (!state.file) return;
  if (ev.pointerType === "touch" && !$(".paintable").classList.contains("drawing")) return;
  keepCanvas.setPointerCapture(ev.pointerId);
  state.strokes = state.strokes || [];
  state.strokes.push({ width: brushWidth(), points: [toPhoto(ev)] });
  drawStrokes(keepCanvas.getContext("2d"), "rgba(255, 40, 40, 0.45)", false);
});
keepCanvas.addEventListener("pointermove", (ev) => {
  if (!keepCanvas.hasPointerCapture(ev.pointerId) || !state.strokes.length) return;
  state.strokes[state.strokes.length - 1].points.push(toPhoto(ev));
  drawStrokes(keepCanvas.getContext("2d"), "rgba(255, 40, 40, 0.45)", false);
});
keepCanvas.addEventListener("pointerup", (ev) => {
  if (keepCanvas.hasPointerCapture(ev.pointerId) && state.strokes && state.strokes.length) paint();
});
keepCanvas.addEventListener("pointercancel", () => {  // the browser took the gesture (a scroll): no stroke
  if (state.strokes && state.strokes.length) state.strokes.pop();
  drawStrokes(keepCanvas.getContext("2d"), "rgba(255, 40, 40, 0.45)", false);
});
$("#keep-clear").addEventListener("click", () => {
  state.strokes = [];
  drawStrokes(keepCanvas.getContext("2d"), "rgba(255, 40, 40, 0.45)", false);
  paint();
});
$("#keep").addEventListener("change", () => paint());

async function keepMask() {
  if (!(state.strokes || []).length || !keepCanvas.width) return null;
  const c = document.createElement("canvas");
  c.width = keepCanvas.width; c.height = keepCanvas.height;
  drawStrokes(c.getContext("2d"), "black", "white");
  $("#keep-clear").hidden = false;
  return new Promise((resolve) => c.toBlob(resolve, "image/png"));
}

// ---------------------------------------------------------------- training

$("#train-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const form = new FormData(ev.target);
  for (const [k, v] of [...form.entries()]) if (v === "" || (v instanceof File && !v.name)) form.delete(k);
  if (form.get("backbone") === "auto") form.delete("backbone");
  try {
    const res = await api("/api/jobs/train", { method: "POST", body: form });
    const job = await res.json();
    showError(null, "#train-error");
    follow(job.id, "train", true);
    loadJobs();
  } catch (e) { showError(e, "#train-error"); }
});

// The panel that follows a job sits under the form of its kind (a video's progress showed under "Train a filter").
function follow(id, kind, scroll = false) {
  if (state.source) state.source.close();
  state.follow = id; state.history = []; state.previewStep = null;
  const panel = $("#train-live");
  if (kind) $(kind === "video" ? "#video-error" : "#train-error").after(panel);
  panel.hidden = false;
  if (scroll) panel.scrollIntoView({ block: "nearest" });
  $("#live-preview").removeAttribute("src");
  $("#live-download").hidden = true;
  const src = new EventSource(withToken(`/api/jobs/${id}/events`));
  state.source = src;
  src.addEventListener("job", (ev) => {
    const job = JSON.parse(ev.data);
    state.history.push(...job.new_history);
    showLive(job);
    if (["done", "failed", "cancelled"].includes(job.status)) { src.close(); loadJobs(); if (job.status === "done") loadFilters(); }
  });
  src.onerror = () => { if (src.readyState === EventSource.CLOSED) return; };
}

function showLive(job) {
  $("#live-title").textContent = `${job.kind} '${job.name}'`;
  const badge = $("#live-status"); badge.textContent = job.status; badge.className = "badge " + job.status;
  $("#live-step").textContent = job.total ? `${job.kind === "train" ? "step" : "frame"} ${job.step} / ${job.total}` : "";
  $("#live-eta").textContent = job.status === "running" && job.eta_s != null ? `ETA ${Math.round(job.eta_s)} s` : "";
  $("#live-progress").value = job.total ? job.step / job.total : 0;
  $("#live-cancel").hidden = !["queued", "running"].includes(job.status);
  $("#live-note").textContent = job.error ? "error: " + job.error : (job.note || "");
  const dl = $("#live-download");
  dl.hidden = !job.links.result;
  if (job.links.result) { dl.href = withToken(job.links.result); dl.textContent = job.kind === "train" ? `download the filter '${job.name}'` : "download the painted clip"; }
  $("#chart").setAttribute("aria-label", chartSummary(job));
  if (job.links.preview && job.preview_step !== state.previewStep) {
    state.previewStep = job.preview_step;
    blobUrl(job.links.preview).then((u) => { $("#live-preview").src = u; $("#live-preview-caption").textContent = job.kind === "train" ? `preview at step ${job.preview_step}` : `frame ${job.preview_step}`; }).catch(() => {});
  }
  $("#chart").hidden = job.kind !== "train";
  if (job.kind === "train") drawChart($("#chart"), state.history);
}

async function cancelJob(id) {
  try { await api(`/api/jobs/${id}/cancel`, { method: "POST" }); loadJobs(); } catch (e) { showError(e, "#jobs-error"); }
}

$("#live-cancel").addEventListener("click", async () => {
  if (!state.follow) return;
  await cancelJob(state.follow);
});

// The loss chart: every term of the training loss on a log scale, and held-out totals as dots.
const COLORS = { total: "#222", content: "#2f6db5", style: "#b5442f", color: "#7a9a2f", tv: "#9a6fb0" };

function chartSummary(job) {
  const last = state.history[state.history.length - 1];
  if (job.kind !== "train" || !last) return "loss chart";
  const terms = Object.entries(last.train).map(([k, v]) => `${k} ${Number(v).toPrecision(3)}`).join(", ");
  return `loss chart: at step ${last.step}, ${terms}` + (last.holdout ? `; held-out total ${Number(last.holdout.total).toPrecision(3)}` : "");
}

// drawn at the size it is shown (a phone showed the 640 px drawing at half size, its labels 5 px high)
function drawChart(canvas, history) {
  const ratio = window.devicePixelRatio || 1;
  const shownW = Math.round(canvas.clientWidth || 640), shownH = Math.round(canvas.clientHeight || 260);
  if (canvas.width !== shownW * ratio || canvas.height !== shownH * ratio) {
    canvas.width = shownW * ratio; canvas.height = shownH * ratio;
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  const W = shownW, H = shownH, L = 48, R = 90, T = 12, B = 28;
  ctx.clearRect(0, 0, W, H);
  ctx.font = "11px system-ui, sans-serif";
  if (!history.length) { ctx.fillStyle = "#777"; ctx.fillText("waiting for the first step…", L, H / 2); return; }
  const keys = Object.keys(history[history.length - 1].train);
  const vals = [];
  for (const h of history) { for (const k of keys) if (h.train[k] > 0) vals.push(h.train[k]); if (h.holdout && h.holdout.total > 0) vals.push(h.holdout.total); }
  let lo = Math.log10(Math.min(...vals)), hi = Math.log10(Math.max(...vals));
  if (hi - lo < 0.5) { lo -= 0.25; hi += 0.25; }
  const pad = 0.05 * (hi - lo); lo -= pad; hi += pad;  // no line drawn on the frame's edge
  const maxStep = Math.max(history[history.length - 1].step, 1), minStep = history[0].step - 1;
  const x = (s) => L + (W - L - R) * (s - minStep) / Math.max(1, maxStep - minStep);
  const y = (v) => T + (H - T - B) * (hi - Math.log10(v)) / (hi - lo);
  ctx.strokeStyle = "#ddd"; ctx.fillStyle = "#777"; ctx.lineWidth = 1;
  for (let p = Math.ceil(lo); p <= Math.floor(hi); p++) {
    ctx.beginPath(); ctx.moveTo(L, y(10 ** p)); ctx.lineTo(W - R, y(10 ** p)); ctx.stroke();
    ctx.fillText(p >= 0 && p < 4 ? String(10 ** p) : "1e" + p, 4, y(10 ** p) + 4);
  }
  ctx.textAlign = "center"; ctx.fillText("loss terms by step (log scale)", (L + W - R) / 2, H - 8); ctx.textAlign = "left";
  ctx.fillText("step " + maxStep, W - R - 50, H - 8);
  ctx.fillText("step " + (minStep + 1), L, H - 8);
  keys.forEach((k, i) => {
    ctx.strokeStyle = COLORS[k] || "#999"; ctx.lineWidth = k === "total" ? 2 : 1.2;
    ctx.beginPath();
    let started = false;
    for (const h of history) { const v = h.train[k]; if (!(v > 0)) continue; if (!started) { ctx.moveTo(x(h.step), y(v)); started = true; } else ctx.lineTo(x(h.step), y(v)); }
    ctx.stroke();
    ctx.fillStyle = COLORS[k] || "#999"; ctx.fillText(k, W - R + 10, T + 12 + i * 15);
  });
  const held = history.filter((h) => h.holdout && h.holdout.total > 0);
  ctx.fillStyle = "#e08a00";
  for (const h of held) { ctx.beginPath(); ctx.arc(x(h.step), y(h.holdout.total), 3, 0, 2 * Math.PI); ctx.fill(); }
  if (held.length) ctx.fillText("● held-out", W - R + 10, T + 12 + keys.length * 15);
}

// ---------------------------------------------------------------- video

$("#video-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const form = new FormData(ev.target);
  // unset fields are left out, so the server's defaults apply; an empty file input is a nameless 0-byte file
  for (const [k, v] of [...form.entries()]) if (v === "" || (v instanceof File && !v.name && !v.size)) form.delete(k);
  form.set("stabilize", $("#video-stabilize").checked ? "true" : "false");
  try {
    const job = await (await api("/api/jobs/video", { method: "POST", body: form })).json();
    showError(null, "#video-error"); follow(job.id, "video", true); loadJobs();
  } catch (e) { showError(e, "#video-error"); }
});

// ---------------------------------------------------------------- jobs list

// Rebuilt only when a job changed, and the focused control put back: rebuilt every 5 s, the table took the focus
// from a keyboard user and detached the buttons under a pointer.
async function loadJobs() {
  const res = await api("/api/jobs?limit=50");
  const jobs = await res.json();
  const sig = token() + JSON.stringify(jobs.map((j) => [j.id, j.status, j.step, j.total, j.error, j.note, !!j.links.result]));
  if (sig === state.jobs) return jobs;
  state.jobs = sig;
  const focused = document.activeElement && document.activeElement.closest("#jobs") ? document.activeElement.dataset.key : null;
  const body = $("#jobs tbody");
  body.innerHTML = jobs.length ? "" : '<tr><td colspan="7" class="muted">No jobs yet: training and video jobs show here.</td></tr>';
  for (const j of jobs) {
    const tr = document.createElement("tr");
    const pct = j.total ? Math.round(100 * j.step / j.total) + "%" : "";
    const when = new Date((j.started || j.created) * 1000).toLocaleTimeString();
    tr.innerHTML = `<td class="wide"><code>${j.id}</code></td><td>${j.kind}</td><td class="n"></td>
      <td><span class="badge ${j.status}">${j.status}</span></td><td>${j.total ? `${j.step}/${j.total} (${pct})` : ""}</td><td class="wide">${when}</td><td class="act"></td>`;
    tr.querySelector(".n").textContent = j.kind === "video" && j.params && j.params.clip ? `${j.params.clip} (${j.name})` : j.name;
    const act = tr.querySelector(".act");
    const button = (label, onclick) => {
      const b = document.createElement("button"); b.className = "plain"; b.textContent = label; b.onclick = onclick;
      b.dataset.key = `${j.id}:${label}`; b.setAttribute("aria-label", `${label} job ${j.id} (${j.kind} '${j.name}')`);
      act.appendChild(b);
    };
    button("follow", () => follow(j.id, j.kind, true));
    if (["queued", "running"].includes(j.status)) {
      button("cancel", () => cancelJob(j.id));
    }
    if (j.links.result) {
      const a = document.createElement("a"); a.href = withToken(j.links.result); a.textContent = "download";
      a.dataset.key = `${j.id}:download`; act.appendChild(a);
    }
    body.appendChild(tr);
    if (j.error || j.note) {
      const er = document.createElement("tr");
      er.innerHTML = `<td class="wide"></td><td colspan="6" class="${j.error ? "err" : "note"}"></td>`;
      er.querySelector("td:last-child").textContent = j.error ? "error: " + j.error : j.note;
      body.appendChild(er);
    }
  }
  if (focused) { const el = body.querySelector(`[data-key="${CSS.escape(focused)}"]`); if (el) el.focus(); }
  return jobs;
}

// ---------------------------------------------------------------- health and refresh

async function health() {
  try {
    const h = await (await fetch("/api/health")).json();
    $("#health").textContent = `v${h.version} · ${h.filters} filters · ${h.jobs.running} running, ${h.jobs.queued} queued`;
  } catch (e) { $("#health").textContent = "server unreachable"; }
}

async function refresh() {
  health();
  try {
    await loadFilters();
    const jobs = await loadJobs();
    showError(null);
    // a reload while a job runs: follow it again (the panel was gone until "follow" was found in the table)
    const running = (jobs || []).find((j) => ["running", "queued"].includes(j.status));
    if (running && !state.follow) follow(running.id, running.kind);
  } catch (e) { showError(e); }
}

refresh();
setInterval(() => { health(); loadJobs().catch(() => {}); }, 5000);
