// Rookery dashboard: polls the admin API once a second. No libraries, no build step.
"use strict";

const HISTORY = 120;
const state = { token: null, last: null, seriesIn: [], seriesOut: [], clientsShown: "" };

function el(id) { return document.getElementById(id); }

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text == null ? "" : String(text);
  if (className) td.className = className;
  td.title = td.textContent;
  return td;
}

async function api(method, path) {
  const response = await fetch("/api/v1" + path, {
    method,
    headers: { Authorization: "Bearer " + state.token },
  });
  if (response.status === 401) {
    showLogin("That token was refused.");
    throw new Error("unauthorised");
  }
  return response.json();
}

function showLogin(message) {
  localStorage.removeItem("rookery-token");
  state.token = null;
  el("app").hidden = true;
  el("login").hidden = false;
  el("login-error").textContent = message || "";
}

function since(seconds) {
  const age = Math.max(0, Math.floor(Date.now() / 1000) - seconds);
  if (age < 60) return age + " s ago";
  if (age < 3600) return Math.floor(age / 60) + " min ago";
  return Math.floor(age / 3600) + " h ago";
}

function renderStats(stats) {
  el("version").textContent = "v" + stats.version;
  el("uptime").textContent = "up " + since(Math.floor(Date.now() / 1000) - stats.uptime_seconds).replace(" ago", "");
  el("clients-connected").textContent = stats.clients_connected;
  el("subscriptions").textContent = stats.subscriptions;
  el("retained-count").textContent = stats.retained;
  el("dropped").textContent = stats.publish_dropped;
  const now = performance.now();
  if (state.last) {
    const seconds = (now - state.last.at) / 1000;
    const rateIn = Math.max(0, (stats.publish_received - state.last.stats.publish_received) / seconds);
    const rateOut = Math.max(0, (stats.publish_sent - state.last.stats.publish_sent) / seconds);
    push(state.seriesIn, rateIn);
    push(state.seriesOut, rateOut);
    el("rate-in").textContent = Math.round(rateIn);
    el("rate-out").textContent = Math.round(rateOut);
    drawChart();
  }
  state.last = { at: now, stats };
}

function push(series, value) {
  series.push(value);
  if (series.length > HISTORY) series.shift();
}

function drawChart() {
  const canvas = el("chart");
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth * ratio;
  const height = canvas.clientHeight * ratio;
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d");
  context.clearRect(0, 0, width, height);
  const max = Math.max(10, ...state.seriesIn, ...state.seriesOut) * 1.15;
  context.strokeStyle = "#26303b";
  context.fillStyle = "#8b98a5";
  context.font = 11 * ratio + "px system-ui";
  context.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = height - (height * i) / 4;
    context.beginPath();
    context.moveTo(0, y);
    context.lineTo(width, y);
    context.stroke();
    if (i > 0) context.fillText(Math.round((max * i) / 4) + "/s", 4, y + 12 * ratio);
  }
  const plot = (series, colour) => {
    context.strokeStyle = colour;
    context.lineWidth = 2 * ratio;
    context.beginPath();
    series.forEach((value, index) => {
      const x = width - ((series.length - 1 - index) * width) / (HISTORY - 1);
      const y = height - (value / max) * height;
      if (index === 0) context.moveTo(x, y); else context.lineTo(x, y);
    });
    context.stroke();
  };
  plot(state.seriesIn, "#4cc2ff");
  plot(state.seriesOut, "#a78bfa");
}

function renderClients(clients) {
  const needle = el("search").value.trim().toLowerCase();
  const shown = clients.filter((client) =>
    !needle || client.client_id.toLowerCase().includes(needle) || (client.username || "").toLowerCase().includes(needle));
  const body = el("clients").tBodies[0];
  body.replaceChildren();
  if (shown.length === 0) {
    const row = body.insertRow();
    const td = cell(needle ? "No client matches." : "No client connected.", "empty");
    td.colSpan = 9;
    row.append(td);
  }
  for (const client of shown) {
    const row = body.insertRow();
    row.dataset.clientId = client.client_id;
    row.append(
      cell(client.client_id, "mono"), cell(client.username || "—"), cell(client.version),
      cell(client.peer || "—", "mono"), cell(client.listener, "mono"), cell(since(client.connected_since)),
      cell(client.queued), cell(client.subscriptions.length));
    const kick = document.createElement("button");
    kick.textContent = "Kick";
    kick.dataset.kick = client.client_id;
    kick.addEventListener("click", () => kickClient(client.client_id));
    const action = document.createElement("td");
    action.append(kick);
    row.append(action);
  }
  const subscriptions = el("subscriptions-table").tBodies[0];
  subscriptions.replaceChildren();
  const pairs = clients.flatMap((client) => client.subscriptions.map((filter) => [filter, client.client_id]));
  pairs.sort((a, b) => a[0].localeCompare(b[0]));
  if (pairs.length === 0) {
    const td = cell("No subscriptions.", "empty");
    td.colSpan = 2;
    subscriptions.insertRow().append(td);
  }
  for (const [filter, clientId] of pairs) subscriptions.insertRow().append(cell(filter, "mono"), cell(clientId, "mono"));
}

function renderRetained(messages) {
  const body = el("retained").tBodies[0];
  body.replaceChildren();
  if (messages.length === 0) {
    const td = cell("No retained message matches.", "empty");
    td.colSpan = 2;
    body.insertRow().append(td);
  }
  for (const message of messages) body.insertRow().append(cell(message.topic, "mono"), cell(message.payload, "mono"));
}

async function kickClient(clientId) {
  await api("POST", "/clients/" + encodeURIComponent(clientId) + "/kick");
  await refresh();
}

async function refresh() {
  try {
    const [stats, clients, retained] = await Promise.all([
      api("GET", "/stats"),
      api("GET", "/clients"),
      api("GET", "/retained?filter=" + encodeURIComponent(el("retained-filter").value || "#")),
    ]);
    renderStats(stats);
    state.clients = clients.clients;
    renderClients(clients.clients);
    renderRetained(retained.retained || []);
    el("live").classList.add("live");
    el("status-text").textContent = "live";
  } catch (error) {
    el("live").classList.remove("live");
    el("status-text").textContent = state.token ? "broker unreachable" : "signed out";
  }
}

function start(token) {
  state.token = token;
  localStorage.setItem("rookery-token", token);
  el("login").hidden = true;
  el("app").hidden = false;
  refresh();
}

el("search").addEventListener("input", () => renderClients(state.clients || []));
el("retained-filter").addEventListener("change", refresh);
el("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  start(el("token").value);
});

const fromFragment = new URLSearchParams(location.hash.slice(1)).get("token");
if (fromFragment) history.replaceState(null, "", location.pathname);
const token = fromFragment || localStorage.getItem("rookery-token");
if (token) start(token); else showLogin();
setInterval(() => { if (state.token) refresh(); }, 1000);
