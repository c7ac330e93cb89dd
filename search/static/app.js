// The search page: calls /api/search and /api/similar, draws one card per video (score
// timeline + best ranges with poster frames) and plays a range in the side player.
"use strict";

const $ = (id) => document.getElementById(id);
const player = $("player");
let playing = null; // {videoId, start, end} of the range in the player

function formatTime(seconds) {
  const m = Math.floor(seconds / 60);
  const s = (seconds - 60 * m).toFixed(1).padStart(4, "0");
  return `${m}:${s}`;
}

function baseName(path) {
  return String(path).split(/[\\/]/).pop();
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

// ---------------------------------------------------------------- requests

function options() {
  return { top: $("top").value, per_video: $("per-video").value, timeline: "1" };
}

async function getJSON(path, params) {
  const response = await fetch(`${path}?${new URLSearchParams(params)}`);
  const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

async function run(path, params, title) {
  showMessage("Searching…");
  $("results").replaceChildren();
  try {
    const results = await getJSON(path, params);
    renderResults(results, title);
  } catch (err) {
    showMessage(`Error: ${err.message}`, true);
  }
}

function search(text) {
  history.replaceState(null, "", `?${new URLSearchParams({ q: text })}`);
  return run("/api/search", { q: text, ...options() }, `Results for “${text}”`);
}

function moreLike(video, range) {
  const title = `More like ${baseName(video.path)} ${formatTime(range.start)}–${formatTime(range.end)}`;
  return run("/api/similar", { window_id: range.window_id, ...options() }, title);
}

function showMessage(text, isError = false) {
  const message = $("message");
  message.textContent = text;
  message.classList.toggle("error", isError);
}

// ---------------------------------------------------------------- rendering

function scoreBounds(results) {
  const scores = results.flatMap((v) => (v.timeline || []).map((w) => w.score));
  if (scores.length === 0) return [0, 1];
  return [Math.min(...scores), Math.max(...scores)];
}

// Dark blue (low) -> teal -> yellow (high), like a heat strip.
function heat(fraction) {
  const stops = [[30, 35, 80], [30, 150, 140], [250, 220, 60]];
  const x = Math.min(Math.max(fraction, 0), 1) * (stops.length - 1);
  const i = Math.min(Math.floor(x), stops.length - 2);
  const f = x - i;
  const rgb = stops[i].map((c, k) => Math.round(c + f * (stops[i + 1][k] - c)));
  return `rgb(${rgb.join(",")})`;
}

function renderResults(results, title) {
  if (results.length === 0) {
    showMessage(`${title}: nothing found.`);
    return;
  }
  showMessage(`${title}: ${results.length} video${results.length > 1 ? "s" : ""}.`);
  const bounds = scoreBounds(results);
  if (results.some((v) => v.timeline)) $("message").append(legend(bounds));
  $("results").replaceChildren(...results.map((video) => videoCard(video, bounds)));
}

function legend([low, high]) {
  const ramp = el("span", { class: "ramp" });
  ramp.style.background = `linear-gradient(to right, ${heat(0)}, ${heat(0.5)}, ${heat(1)})`;
  return el("span", { class: "legend" }, `window score ${low.toFixed(3)} `, ramp, ` ${high.toFixed(3)}`);
}

function videoCard(video, bounds) {
  const header = el("div", { class: "video-header" },
    el("span", { class: "rank" }, `#${video.rank}`),
    el("span", { class: "name", title: video.path }, baseName(video.path)),
    el("span", { class: "muted" }, `${formatTime(video.duration)} · best ${video.score.toFixed(3)}`));
  return el("li", { class: "video", "data-video-id": video.video_id },
    header, timeline(video, bounds), el("div", { class: "ranges" }, ...video.ranges.map((r) => rangeTile(video, r))));
}

function placed(node, start, end, duration) {
  const span = duration > 0 ? duration : 1;
  node.style.left = `${(100 * start) / span}%`;
  node.style.width = `${Math.max((100 * (end - start)) / span, 0.4)}%`;
  return node;
}

// Windows overlap: each cell runs from its window's start to the next window's start, so the
// strip shows every window's score side by side.
function timeline(video, [low, high]) {
  const strip = el("div", { class: "timeline", title: "score of every window along the video; click to play" });
  const windows = [...(video.timeline || [])].sort((a, b) => a.start - b.start);
  windows.forEach((w, i) => {
    const next = i + 1 < windows.length ? windows[i + 1].start : w.end;
    const cell = el("div", { class: "window", title: `${formatTime(w.start)}–${formatTime(w.end)}: ${w.score.toFixed(3)}` });
    cell.style.background = heat(high > low ? (w.score - low) / (high - low) : 1);
    cell.addEventListener("click", () => play(video, w.start, w.end));
    strip.append(placed(cell, w.start, Math.max(Math.min(w.end, next), w.start), video.duration));
  });
  for (const r of video.ranges) strip.append(placed(el("div", { class: "mark" }), r.start, r.end, video.duration));
  return strip;
}

function rangeTile(video, range) {
  const mid = (range.start + range.end) / 2;
  const poster = el("img", {
    src: `/poster/${encodeURIComponent(video.video_id)}?t=${mid.toFixed(2)}`,
    alt: `frame at ${formatTime(mid)}`, loading: "lazy",
  });
  const button = el("button", { class: "range", type: "button", "data-start": range.start, "data-end": range.end },
    poster, el("span", { class: "range-label" }, `${formatTime(range.start)}–${formatTime(range.end)}`),
    el("span", { class: "score" }, range.score.toFixed(3)));
  button.addEventListener("click", () => play(video, range.start, range.end));
  const more = el("button", { class: "more", type: "button", title: "search with this range's own embedding" }, "More like this");
  more.addEventListener("click", () => moreLike(video, range));
  return el("div", { class: "range-tile" }, button, more);
}

// ---------------------------------------------------------------- player

function play(video, start, end) {
  playing = { videoId: video.video_id, start, end };
  $("now-playing").textContent = `${baseName(video.path)}  ${formatTime(start)}–${formatTime(end)}`;
  // A new src each time: Media Fragments make the browser seek to start (and stop at end).
  player.src = `/video/${encodeURIComponent(video.video_id)}#t=${start},${end}`;
  player.play().catch(() => {}); // autoplay may be refused; the user can press play
}

player.addEventListener("loadedmetadata", () => {
  // Browsers without Media Fragments start at 0: seek ourselves.
  if (playing && Math.abs(player.currentTime - playing.start) > 0.1) player.currentTime = playing.start;
});

player.addEventListener("timeupdate", () => {
  if (playing && !player.paused && player.currentTime >= playing.end) {
    player.pause();
    playing = { ...playing, end: Infinity }; // pressing play again continues past the range
  }
});

player.addEventListener("error", () => {
  const code = player.error ? player.error.code : "?";
  $("now-playing").textContent = `This browser cannot play ${$("now-playing").textContent.trim()} (media error ${code}: ` +
    "its codec may be unsupported here; the file itself is served as indexed).";
});

// ---------------------------------------------------------------- start

async function showStatus() {
  try {
    const status = await getJSON("/api/status", {});
    const parts = [];
    for (const key of ["files", "videos", "windows"]) {
      if (typeof status[key] === "number") parts.push(`${status[key]} ${key}`);
    }
    const model = status.model && status.model.description ? ` · model: ${status.model.description}` : "";
    $("index-status").textContent = parts.length ? `Index: ${parts.join(", ")}${model}` : "";
  } catch (err) {
    $("index-status").textContent = `Index status unavailable: ${err.message}`;
  }
}

$("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("q").value.trim();
  if (text) search(text);
  else showMessage("Type some words first.", true);
});

showStatus();
const initial = new URLSearchParams(location.search).get("q");
if (initial) {
  $("q").value = initial;
  search(initial);
}
