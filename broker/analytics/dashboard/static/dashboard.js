// ejx authorities' dashboard: reads ejx's own JSON endpoints and draws tables and SVG charts.
// No third-party code; every value from the server is inserted as text, never as HTML.
// The session cookie (HttpOnly) goes with every same-origin call; when it has ended (401)
// the page reloads into the sign-in form.
"use strict";

const STATUS_LABELS = { live: "работает", silent: "молчит", never_connected: "не подключена" };
const MARK_LABELS = ["5", "4", "3", "2", "1", "зач", "незач"];
const SVG_NS = "http://www.w3.org/2000/svg";
const REFRESH_MS = 30000;
const SCHOOL_ZONE = "Europe/Moscow";

const query = new URLSearchParams(window.location.search);

function $(selector) { return document.querySelector(selector); }

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function svg(tag, attributes, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function number(value, digits) {
  if (value === null || value === undefined) return "—";
  return Number(value).toLocaleString("ru-RU", { maximumFractionDigits: digits ?? 2 });
}

function percent(value) { return value === null || value === undefined ? "—" : number(value * 100, 1) + " %"; }

// Times as the schools keep them (Europe/Moscow, like the days of the series), whatever the browser's zone.
function moment(iso) {
  return iso ? new Date(iso).toLocaleString("ru-RU", { timeZone: SCHOOL_ZONE }) + " МСК" : "—";
}

async function getJson(path, params, optional) {
  const url = new URL(path, window.location.origin);
  for (const [name, value] of Object.entries(params || {})) if (value) url.searchParams.set(name, value);
  const answer = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
  if (answer.status === 401) {
    window.location.reload();
    throw new Error("сеанс завершён");
  }
  if (answer.status === 403 && optional) return null;
  if (!answer.ok) throw new Error(path + ": HTTP " + answer.status);
  return answer.json();
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    const td = el("td", cell.text, cell.className);
    if (cell.node) td.appendChild(cell.node);
    if (cell.key) td.dataset.key = cell.key;
    tr.appendChild(td);
  }
  return tr;
}

function fillBody(table, rows, empty) {
  const body = table.querySelector("tbody");
  body.replaceChildren(...rows);
  if (!rows.length) {
    const columns = table.querySelectorAll("thead th").length;
    const td = el("td", empty, "note");
    td.colSpan = columns;
    const tr = document.createElement("tr");
    tr.appendChild(td);
    body.appendChild(tr);
  }
}

function fillOptions(select, values) {
  const chosen = query.get(select.name) || "";
  const options = [el("option", "все")];
  options[0].value = "";
  for (const value of values) {
    const option = el("option", value);
    option.value = value;
    options.push(option);
  }
  select.replaceChildren(...options);
  select.value = values.includes(chosen) ? chosen : "";
}

function sparkline(daily) {
  const width = 84, height = 18, max = Math.max(1, ...daily.map((d) => d.events));
  const step = width / Math.max(1, daily.length);
  const chart = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}` });
  daily.forEach((day, index) => {
    const h = (day.events / max) * (height - 2);
    const bar = svg("rect", { x: index * step, y: height - h, width: Math.max(1, step - 1), height: h, class: "bar" });
    bar.appendChild(svg("title", {}, `${day.day}: ${day.events}`));
    chart.appendChild(bar);
  });
  return chart;
}

function renderSchools(data) {
  const district = query.get("district") || "", vendor = query.get("vendor") || "", status = query.get("status") || "";
  fillOptions($("#filter-district"), [...new Set(data.schools.map((s) => s.district))].sort());
  fillOptions($("#filter-vendor"), [...new Set(data.schools.map((s) => s.vendor_id))].sort());
  $("#filter-status").value = status;

  const scoped = data.schools.filter((s) => (!district || s.district === district) && (!vendor || s.vendor_id === vendor));
  const counts = new Map();
  for (const school of scoped) {
    const entry = counts.get(school.district) || { live: 0, silent: 0, never_connected: 0, total: 0 };
    entry[school.status] += 1;
    entry.total += 1;
    counts.set(school.district, entry);
  }
  fillBody($("#district-counts"), [...counts.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([name, c]) => {
    const tr = row([{ text: name, key: "district" }, { text: c.live, className: "number", key: "live" },
      { text: c.silent, className: "number", key: "silent" },
      { text: c.never_connected, className: "number", key: "never_connected" },
      { text: c.total, className: "number", key: "total" }]);
    tr.dataset.district = name;
    return tr;
  }), "Нет школ");

  const shown = scoped.filter((s) => !status || s.status === status);
  fillBody($("#schools"), shown.map((s) => {
    const tr = row([{ text: s.school_id, key: "school_id" }, { text: s.name }, { text: s.district },
      { text: s.vendor_id }, { text: STATUS_LABELS[s.status] || s.status, className: "status status-" + s.status, key: "status" },
      { text: moment(s.last_event_at), key: "last_event_at" },
      { text: number(s.events), className: "number", key: "events" },
      { text: number(s.events_per_day), className: "number", key: "events_per_day" },
      { text: percent(s.timeliness), className: "number", key: "timeliness" }, { node: sparkline(s.daily) }]);
    tr.dataset.school = s.school_id;
    return tr;
  }), "Нет школ с такими условиями");
  $("#schools-note").textContent = `На ${moment(data.as_of)}: молчит — нет событий дольше ${data.silent_after_days} дн.; ` +
    `своевременность — доля отметок, внесённых не позже ${data.timely_within_days} дн. после урока.`;
}

function renderPipeline(data) {
  if (data === null) {  // an authority of some districts only: the pipeline covers all of them
    fillBody($("#consumer-lag"), [], "Нет доступа");
    fillBody($("#outbox"), [], "Нет доступа");
    return;
  }
  const lag = [];
  for (const [consumer, topics] of Object.entries(data.consumer_lag)) {
    const entries = Object.entries(topics);
    if (!entries.length) lag.push(row([{ text: consumer }, { text: "—" }, { text: "нет данных", className: "number" }]));
    for (const [topic, value] of entries) {
      lag.push(row([{ text: consumer }, { text: topic }, { text: number(value), className: "number", key: "lag" }]));
    }
  }
  fillBody($("#consumer-lag"), lag, "Нет потребителей");
  fillBody($("#outbox"), data.outbox.map((o) => {
    const tr = row([{ text: o.destination }, { text: number(o.pending), className: "number", key: "pending" },
      { text: number(o.dead), className: "number", key: "dead" },
      { text: number(o.delivered_recently), className: "number", key: "delivered" },
      { text: number(o.delivered_per_minute), className: "number", key: "rate" }]);
    tr.dataset.destination = o.destination;
    return tr;
  }), "Исходящая очередь пуста");
}

// Horizontal bars: one per item, value labels at the bar ends.
function barChart(target, items, maxValue, format) {
  const barHeight = 20, gap = 6, labelWidth = 110, plotWidth = 260, valueWidth = 60;
  const height = Math.max(1, items.length) * (barHeight + gap) + gap;
  target.setAttribute("width", labelWidth + plotWidth + valueWidth);
  target.setAttribute("height", height);
  target.setAttribute("viewBox", `0 0 ${labelWidth + plotWidth + valueWidth} ${height}`);
  target.replaceChildren();
  if (!items.length) {
    target.appendChild(svg("text", { x: 4, y: 16 }, "нет данных"));
    return;
  }
  items.forEach((item, index) => {
    const y = gap + index * (barHeight + gap);
    const width = maxValue > 0 ? (item.value / maxValue) * plotWidth : 0;
    const group = svg("g", { "data-label": item.label, "data-value": item.value });
    group.appendChild(svg("text", { x: labelWidth - 6, y: y + 14, "text-anchor": "end", class: "label" }, item.label));
    group.appendChild(svg("rect", { x: labelWidth, y, width: Math.max(0, width), height: barHeight, class: "bar" }));
    group.appendChild(svg("text", { x: labelWidth + width + 4, y: y + 14, class: "value" }, format(item.value)));
    target.appendChild(group);
  });
  target.appendChild(svg("line", { x1: labelWidth, y1: 0, x2: labelWidth, y2: height, class: "axis" }));
}

function renderGrades(bySubject, byDistrict) {
  const means = bySubject.groups.filter((g) => g.mean_five_point !== null)
    .map((g) => ({ label: g.subject, value: g.mean_five_point }));
  barChart($("#chart-mean"), means, 5, (v) => number(v, 2));

  const totals = new Map();
  for (const group of byDistrict.groups) {
    for (const [mark, count] of Object.entries(group.distribution)) totals.set(mark, (totals.get(mark) || 0) + count);
  }
  const distribution = MARK_LABELS.filter((m) => totals.has(m)).map((m) => ({ label: m, value: totals.get(m) }));
  barChart($("#chart-distribution"), distribution, Math.max(0, ...distribution.map((d) => d.value)), (v) => number(v, 0));

  const attendance = byDistrict.groups.filter((g) => g.attendance_rate !== null)
    .map((g) => ({ label: g.district || "—", value: Math.round(g.attendance_rate * 1000) / 10 }));
  barChart($("#chart-attendance"), attendance, 100, (v) => number(v, 1) + " %");

  const hidden = bySubject.suppressed_groups + byDistrict.suppressed_groups;
  $("#grades-note").textContent = hidden ? `Группы менее чем из ${bySubject.min_group} учеников не показаны ` +
    "(скрыто полностью или частично: " + hidden + ")." : "";
}

async function load() {
  const state = $("#state");
  state.dataset.state = "loading";
  state.textContent = "Загрузка…";
  try {
    const district = query.get("district") || "";
    const [schools, pipeline, bySubject, byDistrict] = await Promise.all([
      getJson("/v1/monitoring/schools", { as_of: query.get("as_of") }),
      getJson("/v1/monitoring/pipeline", {}, true),
      getJson("/v1/analytics/grades", { group_by: "subject", district, from: query.get("from"), to: query.get("to") }),
      getJson("/v1/analytics/grades", { group_by: "district", district, from: query.get("from"), to: query.get("to") }),
    ]);
    renderSchools(schools);
    renderPipeline(pipeline);
    renderGrades(bySubject, byDistrict);
    state.dataset.state = "ready";
    state.textContent = "Обновлено " + new Date().toLocaleTimeString("ru-RU", { timeZone: SCHOOL_ZONE }) + " МСК";
  } catch (error) {
    state.dataset.state = "error";
    state.textContent = "Ошибка загрузки: " + error.message;
  }
}

function applyFilters(event) {
  event.preventDefault();
  for (const name of ["district", "vendor", "status"]) {
    const value = $("#filter-" + name).value;
    if (value) query.set(name, value); else query.delete(name);
  }
  const search = query.toString();
  window.history.replaceState(null, "", window.location.pathname + (search ? "?" + search : ""));
  load();
}

document.addEventListener("DOMContentLoaded", () => {
  $("#filters").addEventListener("submit", applyFilters);
  load();
  window.setInterval(load, REFRESH_MS);
});
