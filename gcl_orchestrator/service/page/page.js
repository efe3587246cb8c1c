// The live page: the graph as it grows, coloured by state, updated from the API's event stream; a click shows
// a computation's spec, attempts, error, log tail and lineage. No library: SVG drawn by hand.
"use strict";

const MAX_DRAWN = 1500;       // computations drawn one by one; beyond, they are grouped by handler type
const FETCH_LIMIT = 20000;    // computations fetched at load
const EDGES_PER_NODE = 50;    // a join over thousands of parts draws its first fifty edges
const W = 150, H = 18, COL = 180, ROW = 22, PAD = 10;
const STATES = ["waiting", "ready", "running", "retrying", "done", "failed", "upstream-failed", "retired"];

const svg = document.getElementById("graph");
const nodes = new Map();      // name -> {name, state, handler_type, output, inputs, depth, row}
const producerOf = new Map(); // output key -> computation name
const rows = new Map();       // depth -> rows used
let total = 0, selected = null, source = null, drawPending = false;

function colour(state) {
  return getComputedStyle(document.documentElement).getPropertyValue("--" + state).trim() || "#fff";
}

async function api(path, options) {
  const response = await fetch(path, Object.assign({credentials: "same-origin"}, options || {}));
  const body = (response.headers.get("content-type") || "").includes("json") ? await response.json()
                                                                         : await response.text();
  if (!response.ok) throw new Error((body && body.error) || response.statusText);
  return body;
}

function place(node) {
  let depth = 0;
  for (const key of node.inputs) {
    const producer = nodes.get(producerOf.get(key));
    if (producer && producer !== node) depth = Math.max(depth, producer.depth + 1);
  }
  node.depth = depth;
  node.row = rows.get(depth) || 0;
  rows.set(depth, node.row + 1);
}

function addNode(name, state, handlerType, output, inputs) {
  const node = {name, state, handler_type: handlerType, output, inputs: inputs || []};
  nodes.set(name, node);
  if (output) producerOf.set(output, name);
  place(node);
  return node;
}

function relayout() {
  // Each node one column right of its deepest producer, computed once for all (memoized, no recursion: a chain
  // may be thousands long).
  const depth = new Map();
  for (const start of nodes.values()) {
    const stack = [start];
    while (stack.length) {
      const node = stack[stack.length - 1];
      if (depth.has(node.name)) { stack.pop(); continue; }
      let pending = false, d = 0;
      for (const key of node.inputs) {
        const producer = nodes.get(producerOf.get(key));
        if (!producer || producer === node) continue;
        if (!depth.has(producer.name)) {
          if (!stack.includes(producer)) { stack.push(producer); pending = true; }
        } else {
          d = Math.max(d, depth.get(producer.name) + 1);
        }
      }
      if (!pending) { depth.set(node.name, d); stack.pop(); }
    }
  }
  rows.clear();
  for (const node of nodes.values()) {
    node.depth = depth.get(node.name) || 0;
    node.row = rows.get(node.depth) || 0;
    rows.set(node.depth, node.row + 1);
  }
}

function reset() {
  nodes.clear(); producerOf.clear(); rows.clear();
}

async function load() {
  const status = await api("/v1/status");
  document.getElementById("store").textContent = (status.orchestrator && status.orchestrator.store) || "";
  total = status.computations;
  const graph = await api("/v1/graph?format=json&limit=" + FETCH_LIMIT);
  reset();
  const inputs = new Map(), outputs = new Map();
  for (const edge of graph.edges) {
    if (edge.kind === "reads") {
      if (!inputs.has(edge.to)) inputs.set(edge.to, []);
      inputs.get(edge.to).push(edge.from);
    } else {
      outputs.set(edge.from, edge.to);
    }
  }
  const computations = graph.nodes.filter(n => n.type === "computation");
  for (const c of computations) producerOf.set(outputs.get(c.id), c.id);
  for (const c of computations) addNode(c.id, c.state, c.handler_type, outputs.get(c.id), inputs.get(c.id));
  relayout();  // registration order need not be the graph's order (after a restart, say)
  scheduleDraw();
  listen(status.last_event_id);
}

function listen(lastId) {
  if (source) source.close();
  source = new EventSource("/v1/events?last_event_id=" + encodeURIComponent(lastId));
  const connection = document.getElementById("connection");
  source.onopen = () => { connection.dataset.state = "live"; connection.textContent = "live"; };
  source.onerror = () => { connection.dataset.state = "lost"; connection.textContent = "reconnecting"; };
  source.addEventListener("states", event => {  // the changes sent at once, in order
    let added = false, details = false;
    for (const change of JSON.parse(event.data)) {
      const node = nodes.get(change.computation);
      if (node) {
        node.state = change.state;
      } else {
        total += 1;
        addNode(change.computation, change.state, change.handler_type, change.output, change.inputs);
        added = true;
      }
      if (selected === change.computation) details = true;
    }
    if (details) showDetails(selected);
    if (added && nodes.size <= MAX_DRAWN) relayoutSoon();  // they may feed nodes drawn already
    scheduleDraw();
  });
  source.addEventListener("reset", () => { source.close(); load(); });
}

let relayoutPending = false;
function relayoutSoon() {
  relayoutPending = true;
  scheduleDraw();
}

function scheduleDraw() {
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(() => {
    drawPending = false;
    if (relayoutPending) { relayoutPending = false; relayout(); }
    draw();
  });
}

function drawCounts() {
  const counts = {};
  for (const node of nodes.values()) counts[node.state] = (counts[node.state] || 0) + 1;
  const box = document.getElementById("counts");
  box.textContent = "";
  for (const state of STATES) {
    if (!counts[state]) continue;
    const span = document.createElement("span");
    span.dataset.state = state;
    span.style.background = colour(state);
    span.textContent = state + " " + counts[state];
    box.appendChild(span);
  }
}

function el(tag, attrs, parent) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

function draw() {
  drawCounts();
  const note = document.getElementById("graph-note");
  const shown = nodes.size < total ? ` (${nodes.size} of ${total} loaded)` : "";
  svg.textContent = "";
  if (nodes.size > MAX_DRAWN) {
    note.textContent = `${nodes.size} computations${shown}: grouped by handler type; click a group for its ` +
                       "members";
    drawGroups();
    return;
  }
  note.textContent = `${nodes.size} computation${nodes.size === 1 ? "" : "s"}${shown}`;
  let width = 0, height = 0;
  const edges = el("g", {}, svg), boxes = el("g", {}, svg);
  for (const node of nodes.values()) {
    const x = PAD + node.depth * COL, y = PAD + node.row * ROW;
    width = Math.max(width, x + W + PAD); height = Math.max(height, y + H + PAD);
    for (const key of node.inputs.slice(0, EDGES_PER_NODE)) {
      const from = nodes.get(producerOf.get(key));
      if (!from || from === node) continue;
      el("line", {x1: PAD + from.depth * COL + W, y1: PAD + from.row * ROW + H / 2, x2: x, y2: y + H / 2}, edges);
    }
    const g = el("g", {class: "node" + (selected === node.name ? " selected" : ""), "data-computation": node.name,
                       "data-state": node.state}, boxes);
    el("rect", {x, y, width: W, height: H, rx: 3, fill: colour(node.state)}, g);
    const label = el("text", {x: x + 4, y: y + 13}, g);
    label.textContent = node.name.length > 24 ? node.name.slice(0, 23) + "…" : node.name;
    const title = el("title", {}, g);
    title.textContent = `${node.name} [${node.handler_type}] ${node.state}`;
    g.addEventListener("click", () => showDetails(node.name));
  }
  svg.setAttribute("width", width); svg.setAttribute("height", height);
}

function drawGroups() {
  const groups = new Map();
  for (const node of nodes.values()) {
    if (!groups.has(node.handler_type)) groups.set(node.handler_type, {members: [], counts: {}});
    const group = groups.get(node.handler_type);
    group.members.push(node.name);
    group.counts[node.state] = (group.counts[node.state] || 0) + 1;
  }
  let y = PAD + 20;
  const barWidth = 600;
  for (const [type, group] of [...groups.entries()].sort()) {
    const g = el("g", {class: "group", "data-handler-type": type}, svg);
    el("rect", {class: "frame", x: PAD, y, width: barWidth + 220, height: 34, rx: 4}, g);
    const label = el("text", {x: PAD + 6, y: y + 21}, g);
    label.textContent = `${type}: ${group.members.length}`;
    let x = PAD + 200;
    for (const state of STATES) {
      const n = group.counts[state];
      if (!n) continue;
      const w = Math.max(1, barWidth * n / group.members.length);
      const part = el("rect", {x, y: y + 8, width: w, height: 18, fill: colour(state), "data-state": state}, g);
      const title = el("title", {}, part);
      title.textContent = `${state}: ${n}`;
      x += w;
    }
    g.addEventListener("click", () => showGroup(type, group));
    y += 44;
  }
  svg.setAttribute("width", barWidth + 240); svg.setAttribute("height", y);
}

function showGroup(type, group) {
  const pane = document.getElementById("details");
  pane.hidden = false;
  selected = null;
  document.getElementById("d-actions").hidden = true;
  document.getElementById("d-name").textContent = `handler type ${type}`;
  document.getElementById("d-state").textContent = "";
  document.getElementById("d-meta").textContent = `${group.members.length} computations; the first 200:`;
  const list = document.getElementById("d-spec");
  list.textContent = "";
  for (const name of group.members.slice(0, 200)) {
    const a = document.createElement("a");
    a.href = "#"; a.textContent = `${name} (${nodes.get(name).state})\n`;
    a.addEventListener("click", e => { e.preventDefault(); showDetails(name); });
    list.appendChild(a);
  }
  for (const id of ["d-error", "d-errors", "d-log", "d-lineage"]) document.getElementById(id).textContent = "";
}

async function showDetails(name) {
  selected = name;
  const pane = document.getElementById("details");
  pane.hidden = false;
  let c;
  try {
    c = await api("/v1/computations/" + encodeURIComponent(name));
  } catch (err) {
    document.getElementById("d-name").textContent = name;
    document.getElementById("d-error").textContent = String(err.message || err);
    return;
  }
  if (selected !== name) return;
  document.getElementById("d-actions").hidden = false;
  const settled = ["done", "failed", "upstream-failed", "retired"].includes(c.state);
  document.getElementById("d-cancel").disabled = settled;  // nothing left to stop
  document.getElementById("d-name").textContent = c.computation;
  const state = document.getElementById("d-state");
  state.textContent = c.state; state.style.background = colour(c.state); state.dataset.state = c.state;
  document.getElementById("d-meta").textContent =
    `[${c.handler_type}] ${c.attempts} attempt${c.attempts === 1 ? "" : "s"}, output ${c.output}` +
    (c.note ? ` — ${c.note}` : "");
  document.getElementById("d-error").textContent = c.last_error || "";
  document.getElementById("d-errors").textContent = (c.errors || []).join("\n");
  document.getElementById("d-spec").textContent = JSON.stringify(c.spec, null, 1);
  document.getElementById("d-log").textContent = c.log_tail ||
    (c.attempt_logs && c.attempt_logs.length ? "" : "(no log: it printed nothing, or has not run)");
  document.getElementById("d-lineage").textContent = (c.lineage || []).join("\n");
  document.getElementById("d-action-result").textContent = "";
  scheduleDraw();
}

async function act(verb) {
  if (!selected) return;
  const out = document.getElementById("d-action-result");
  try {
    const answer = await api(`/v1/computations/${encodeURIComponent(selected)}/${verb}`, {method: "POST"});
    out.textContent = `${verb}: ${answer.state}`;
  } catch (err) {
    out.textContent = `${verb}: ${err.message || err}`;
  }
}

document.getElementById("d-cancel").addEventListener("click", () => act("cancel"));
document.getElementById("d-rerun").addEventListener("click", () => act("rerun"));
document.getElementById("close-details").addEventListener("click", () => {
  document.getElementById("details").hidden = true; selected = null; scheduleDraw();
});
load().catch(err => { document.getElementById("graph-note").textContent = "could not load: " + err.message; });
