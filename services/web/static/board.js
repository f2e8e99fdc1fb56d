// The live board: renders each snapshot (the page's own first, then the stream's) with DOM
// calls and textContent only, so alert text can never become markup.
"use strict";
const DATA = JSON.parse(document.getElementById("board-data").textContent);
const MEANINGS = DATA.meanings;
const SEVERITIES = ["P0", "P1", "P2", "P3"];
let seq = -1;
let offset = 0;
const live = document.getElementById("live");

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) {
    if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
  }
  return node;
}
function span(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m";
  const pad = (n) => String(n).padStart(2, "0");
  if (s < 86400) return Math.floor(s / 3600) + "h " + pad(Math.floor((s % 3600) / 60)) + "m";
  return Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
}
const now = () => Date.now() + offset;
function until(iso) {
  const d = (Date.parse(iso) - now()) / 1000;
  return d >= 0 ? "in " + span(d) : span(-d) + " ago";
}
function tick() {
  for (const n of document.querySelectorAll("[data-since]")) {
    n.textContent = span((now() - Date.parse(n.dataset.since)) / 1000);
  }
  for (const n of document.querySelectorAll("[data-due]")) n.textContent = until(n.dataset.due);
}
function incident(i) {
  const meta = el("div", {class: "meta"},
    el("span", {class: "state state-" + i.state}, i.state),
    el("span", {class: "age"}, "open ", el("span", {"data-since": i.first_seen_at}, "")),
    el("span", {class: "num"}, "#" + i.id),
    i.occurrence_count > 1 ? el("span", {class: "count"}, "\u00d7" + i.occurrence_count) : null,
    el("span", {class: "source"}, i.source));
  let ack;
  if (i.state === "acknowledged") {
    ack = el("div", {class: "ack"}, "Acknowledged by ",
      el("b", {class: "who"}, i.acknowledged_by || "someone"),
      i.acknowledged_at ? " " : null,
      i.acknowledged_at ? el("span", {"data-since": i.acknowledged_at}, "") : null,
      i.acknowledged_at ? " ago" : null);
  } else {
    const late = Date.parse(i.response_deadline) < now() ? " late" : "";
    ack = el("div", {class: "ack none" + late}, "Not acknowledged \u00b7 deadline ",
      el("span", {"data-due": i.response_deadline}, ""));
  }
  let snooze = null;
  if (i.snoozed_until && Date.parse(i.snoozed_until) > now()) {
    snooze = el("div", {class: "snooze"}, "Snoozed, wakes ",
      el("span", {"data-due": i.snoozed_until}, ""));
  }
  let next = null;
  if (i.next_step) {
    next = el("div", {class: "next"}, "Next: ", el("b", {}, i.next_step.message),
      " \u2192 " + i.next_step.target + " ", el("span", {"data-due": i.next_step.due_at}, ""));
  }
  return el("li", {class: "incident sev-" + i.severity, id: "incident-" + i.id,
    "data-id": String(i.id), "data-state": i.state},
    el("div", {class: "title"}, i.title), meta, ack, snooze, next);
}
function render(snap) {
  const summary = document.getElementById("summary");
  summary.replaceChildren(...SEVERITIES.map((s) =>
    el("span", {class: "tally sev-" + s}, s + " ", el("b", {}, snap.open_counts[s] || 0))));
  const main = document.getElementById("incidents");
  const groups = [];
  for (const s of SEVERITIES) {
    const items = snap.incidents.filter((i) => i.severity === s);
    if (!items.length) continue;
    groups.push(el("section", {class: "group sev-" + s},
      el("h2", {}, s + " \u00b7 " + MEANINGS[s] + " ",
        el("span", {class: "n"}, "(" + (snap.open_counts[s] || items.length) + ")")),
      el("ul", {}, ...items.map(incident))));
  }
  if (!groups.length) groups.push(el("p", {class: "empty"}, "No open incidents."));
  const total = SEVERITIES.reduce((a, s) => a + (snap.open_counts[s] || 0), 0);
  if (total > snap.incidents.length) {
    groups.push(el("p", {class: "more"}, "Showing the " + snap.incidents.length +
      " most urgent."));
  }
  main.replaceChildren(...groups);
  const h = snap.health;
  document.getElementById("health").replaceChildren(
    el("h2", {}, "Health ", el("span", {class: "pill status-" + h.status}, h.status)),
    el("ul", {class: "components"}, ...h.components.map((c) =>
      el("li", {class: "status-" + c.status}, el("span", {class: "dot"}),
        el("span", {class: "name"}, c.name), " ", el("span", {class: "detail"}, c.detail)))));
  const s = snap.sse;
  document.getElementById("sse").replaceChildren("SSE streams open: ",
    el("b", {id: "sse-count"}, s.connections), " of " + s.max_connections +
    " \u00b7 board viewers ", el("b", {id: "board-viewers"}, s.board_viewers));
  const updated = document.getElementById("updated");
  updated.dataset.at = snap.now;
  updated.textContent = new Date(snap.now).toLocaleTimeString();
  tick();
}
function status(text, cls) { live.textContent = text; live.className = "live " + cls; }
function show(snap) {
  if (snap.seq <= seq) return;  // older than what is on the page (a replay)
  seq = snap.seq;
  offset = Date.parse(snap.now) - Date.now();
  render(snap);
}
show(DATA.snapshot);
const source = new EventSource(DATA.stream);
source.addEventListener("open", () => status("\u25cf live", "on"));
source.addEventListener(DATA.event, (e) => show(JSON.parse(e.data)));
source.addEventListener("overloaded", () => status("server busy, retrying", "off"));
source.addEventListener("error", () => {
  if (source.readyState === EventSource.CLOSED) {
    status("offline", "off");
    setTimeout(() => location.reload(), 15000);
  } else {
    status("reconnecting\u2026", "off");
  }
});
window.boardSource = source;
tick();
setInterval(tick, 1000);
