// Fewface web console: teach, identify, name the faces identify found, manage people, read the
// calibration report, through the native /v1 API. No build step, no dependencies. The API key (if
// the server wants one) is kept in localStorage; images that need it (thumbnails, the calibration
// plot) are fetched with it as blobs and shown through object URLs (the CSP allows blob:).
"use strict";

const $ = (sel) => document.querySelector(sel);
const KEY_STORE = "fewface.apiKey";
const COLORS = { matched: "#16a34a", unknown: "#dc2626" };

function apiKey() {
  return localStorage.getItem(KEY_STORE) || "";
}

function setStatus(text, isError = false) {
  const el = $("#status");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  const key = apiKey();
  if (key) headers["X-API-Key"] = key;
  const init = { method, headers, credentials: "same-origin" };
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  let data = null;
  try {
    data = await response.json();
  } catch (e) {
    data = null;
  }
  if (!response.ok) {
    const code = data && data.code ? data.code : `http_${response.status}`;
    const message = data && data.error ? data.error : response.statusText;
    const err = new Error(`${message} (${code})`);
    err.code = code;
    throw err;
  }
  return data;
}

async function apiBlob(path) {
  const headers = {};
  const key = apiKey();
  if (key) headers["X-API-Key"] = key;
  const response = await fetch(path, { headers, credentials: "same-origin" });
  if (!response.ok) {
    let data = null;
    try {
      data = await response.json();
    } catch (e) {
      data = null;
    }
    const err = new Error(`${data && data.error ? data.error : response.statusText} (${data && data.code ? data.code : response.status})`);
    err.code = data && data.code ? data.code : `http_${response.status}`;
    throw err;
  }
  return response.blob();
}

function slug(name) {
  const s = name.toLocaleLowerCase().replace(/[^\p{L}\p{N}]+/gu, "-").replace(/^-+|-+$/g, "").slice(0, 96);
  return s || `person-${Date.now().toString(36)}`;
}

// -- people -------------------------------------------------------------------------------
const THUMBS_PEOPLE = 100; // thumbnails are fetched for the first this many people
const THUMBS_PER_PERSON = 6;
let people = []; // [{id, name, ...}] as last listed
let thumbUrls = []; // object URLs of the people table's thumbnails (revoked on reload)

function personFor(name) {
  // the person a typed name means: an existing one by name or id, else a new id from the name
  const wanted = name.trim();
  const existing = people.find((p) => p.name === wanted || p.id === wanted);
  if (existing) return { id: existing.id, name: existing.name, existing: true };
  let id = slug(wanted);
  for (let n = 2; people.some((p) => p.id === id); n++) id = `${slug(wanted)}-${n}`;
  return { id, name: wanted, existing: false };
}

async function loadThumbnails(p, cell) {
  const person = await api("GET", `/v1/people/${encodeURIComponent(p.id)}`);
  const strip = document.createElement("span");
  strip.className = "thumbs";
  for (const face of person.faces.slice(-THUMBS_PER_PERSON)) {
    let blob;
    try {
      blob = await apiBlob(`/v1/people/${encodeURIComponent(p.id)}/faces/${face.id}/thumbnail`);
    } catch (err) {
      if (err.code === "thumbnail_not_found") continue; // taught with thumbnails off, or before they existed
      throw err;
    }
    const url = URL.createObjectURL(blob);
    thumbUrls.push(url);
    const img = document.createElement("img");
    img.className = "thumb";
    img.src = url;
    img.alt = `face example ${face.id} of ${p.name}`;
    img.title = `example ${face.id}: click to delete this example`;
    img.dataset.faceId = String(face.id);
    img.addEventListener("click", () => {
      if (!window.confirm(`Delete face example ${face.id} of ${p.name}? (a wrong example makes wrong matches)`)) return;
      run(async () => {
        await api("DELETE", `/v1/people/${encodeURIComponent(p.id)}/faces/${face.id}`);
        await loadPeople();
        return `Deleted example ${face.id} of ${p.id}`;
      });
    });
    strip.append(img);
  }
  cell.append(strip);
}

async function loadPeople() {
  const data = await api("GET", "/v1/people?limit=1000");
  people = data.people;
  $("#counts").textContent = `${data.total} people · ${data.faces} faces`;
  const names = $("#people-names");
  names.replaceChildren(...data.people.map((p) => Object.assign(document.createElement("option"), { value: p.name })));
  thumbUrls.forEach((u) => URL.revokeObjectURL(u));
  thumbUrls = [];
  const tbody = $("#people");
  tbody.replaceChildren();
  const pending = [];
  for (const p of data.people) {
    const tr = document.createElement("tr");
    tr.dataset.personId = p.id;
    const idCell = document.createElement("td");
    idCell.textContent = p.id;
    const nameCell = document.createElement("td");
    const nameInput = document.createElement("input");
    nameInput.value = p.name;
    nameInput.className = "person-name";
    nameCell.append(nameInput);
    const countCell = document.createElement("td");
    countCell.className = "faces";
    const count = document.createElement("span");
    count.className = "count";
    count.textContent = String(p.face_count);
    countCell.append(count);
    if (pending.length < THUMBS_PEOPLE && p.face_count) pending.push([p, countCell]);
    const actions = document.createElement("td");
    actions.className = "actions";
    const rename = document.createElement("button");
    rename.textContent = "Rename";
    rename.className = "small person-rename";
    rename.addEventListener("click", () => run(async () => {
      await api("PATCH", `/v1/people/${encodeURIComponent(p.id)}`, { name: nameInput.value });
      await loadPeople();
      return `Renamed ${p.id} to ${nameInput.value}`;
    }));
    const remove = document.createElement("button");
    remove.textContent = "Delete";
    remove.className = "small danger person-delete";
    remove.addEventListener("click", () => {
      if (!window.confirm(`Delete ${p.name} (${p.id}) and all their face examples?`)) return;
      run(async () => {
        await api("DELETE", `/v1/people/${encodeURIComponent(p.id)}`);
        await loadPeople();
        return `Deleted ${p.id}`;
      });
    });
    actions.append(rename, " ", remove);
    tr.append(idCell, nameCell, countCell, actions);
    tbody.append(tr);
  }
  // a few at a time: a large gallery must not fire hundreds of requests at once
  for (let i = 0; i < pending.length; i += 4) {
    await Promise.all(pending.slice(i, i + 4).map(([p, cell]) => loadThumbnails(p, cell)));
  }
  tbody.dataset.thumbnails = String(thumbUrls.length);
  return data;
}

// -- teach / identify -------------------------------------------------------------------------
async function teachBlobs(blobs) {
  const name = $("#teach-name").value.trim();
  if (!name) throw new Error("enter a name first");
  if (!blobs.length) throw new Error("choose at least one photo");
  const id = $("#teach-id").value.trim() || slug(name);
  const form = new FormData();
  form.append("name", name);
  blobs.forEach((b, i) => form.append("file", b, b.name || `capture-${i}.jpg`));
  const data = await api("POST", `/v1/people/${encodeURIComponent(id)}/faces`, form);
  await loadPeople();
  return `Taught ${data.person.name} (${data.person.id}): ${data.person.face_count} face example(s)`;
}

let last = null; // {blob, bitmap, data}: the identify answer on screen

async function identifyBlob(blob) {
  const form = new FormData();
  form.append("file", blob, blob.name || "capture.jpg");
  const data = await api("POST", "/v1/identify", form);
  const bitmap = await createImageBitmap(blob);
  last = { blob, bitmap, data };
  draw(bitmap, data);
  const names = data.faces.map((f) => (f.matched ? f.match.name : "unknown"));
  return `${data.face_count} face(s): ${names.join(", ") || "none"}`;
}

// Teach the face #index of the answer on screen to the person a name means (new or existing),
// by its face_token: the photo is not sent again. Then identify the same photo again, so the
// labels show what the gallery now knows.
async function teachFace(index, typed) {
  const face = last && last.data.faces[index];
  if (!face) throw new Error("identify a photo first");
  if (!typed.trim()) throw new Error("type a name for this face first");
  if (!face.face_token) throw new Error("this server issues no face tokens (FEWFACE_FACE_TOKEN_TTL=0): teach from a photo instead");
  const target = personFor(typed);
  const body = { face_token: face.face_token };
  if (!target.existing) body.name = target.name;
  let data;
  try {
    data = await api("POST", `/v1/people/${encodeURIComponent(target.id)}/faces`, body);
  } catch (err) {
    if (err.code === "face_token_expired" || err.code === "face_token_not_found") {
      err.message = `${err.message}: press Identify again, then name the face`;
    }
    throw err;
  }
  const was = face.matched ? ` (was matched with ${face.match.name}, who keeps their examples)` : "";
  await loadPeople();
  await identifyBlob(last.blob);
  return `Taught this face to ${data.person.name} (${data.person.id})${was}: ${data.person.face_count} example(s)`;
}

function selectFace(index) {
  const items = Array.from(document.querySelectorAll("#identify-results li"));
  items.forEach((li, i) => li.classList.toggle("selected", i === index));
  const item = items[index];
  if (!item) return;
  item.scrollIntoView({ block: "nearest" });
  item.querySelector("input.face-name").focus();
}

function faceAt(x, y) {
  // the smallest box under canvas point (x, y): a face inside another's box wins
  const boxes = JSON.parse($("#identify-canvas").dataset.boxes || "[]");
  let best = -1;
  boxes.forEach(([bx, by, bw, bh], i) => {
    if (x >= bx && x <= bx + bw && y >= by && y <= by + bh && (best < 0 || bw * bh < boxes[best][2] * boxes[best][3])) best = i;
  });
  return best;
}

function faceCrop(bitmap, box, size = 72) {
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = size;
  canvas.className = "face-crop";
  const side = Math.max(box.width, box.height) * 1.3;
  const cx = box.left + box.width / 2, cy = box.top + box.height / 2;
  const sx = bitmap.width / last.data.image.width, sy = bitmap.height / last.data.image.height;
  canvas.getContext("2d").drawImage(bitmap, (cx - side / 2) * sx, (cy - side / 2) * sy, side * sx, side * sy, 0, 0, size, size);
  return canvas;
}

function faceItem(face, index, bitmap) {
  const li = document.createElement("li");
  li.className = face.matched ? "matched" : "unknown";
  li.dataset.index = String(index);
  const text = document.createElement("span");
  text.className = "face-text";
  text.textContent = face.matched
    ? `${face.match.name} (${face.match.person_id}), similarity ${face.match.similarity.toFixed(3)}`
    : `unknown face (best similarity ${face.similarity === null ? "n/a" : face.similarity.toFixed(3)})`;
  const form = document.createElement("form");
  form.className = "face-form";
  const input = document.createElement("input");
  input.className = "face-name";
  input.setAttribute("list", "people-names");
  input.maxLength = 256;
  input.placeholder = face.matched ? "not them? the right name" : "who is this?";
  const button = document.createElement("button");
  button.type = "submit";
  button.className = "small face-teach";
  button.textContent = face.matched ? "Correct" : "Name";
  button.title = face.matched
    ? `teach this face to the person you name; ${face.match.name} keeps their examples`
    : "teach this face to the person you name (new, or existing by name)";
  form.append(input, button);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    run(() => teachFace(index, input.value));
  });
  li.addEventListener("click", (e) => {
    if (e.target === li || e.target === text || e.target.tagName === "CANVAS") selectFace(index);
  });
  li.append(faceCrop(bitmap, face.box), text, form);
  return li;
}

function draw(bitmap, data) {
  const canvas = $("#identify-canvas");
  const scale = Math.min(1, 900 / bitmap.width);
  canvas.width = Math.round(bitmap.width * scale);
  canvas.height = Math.round(bitmap.height * scale);
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  const sx = canvas.width / data.image.width;
  const sy = canvas.height / data.image.height;
  const list = $("#identify-results");
  list.replaceChildren();
  const labels = [];
  ctx.lineWidth = Math.max(2, Math.round(canvas.width / 180));
  const fontSize = Math.max(14, Math.round(canvas.width / 22));
  ctx.font = `600 ${fontSize}px system-ui, sans-serif`;
  ctx.textBaseline = "bottom";
  for (const face of data.faces) {
    const b = face.box;
    const x = b.left * sx, y = b.top * sy, w = b.width * sx, h = b.height * sy;
    const color = face.matched ? COLORS.matched : COLORS.unknown;
    const label = face.matched ? `${face.match.name} ${face.match.similarity.toFixed(2)}` : "unknown";
    labels.push(face.matched ? face.match.name : "unknown");
    ctx.strokeStyle = color;
    ctx.strokeRect(x, y, w, h);
    const tw = ctx.measureText(label).width + 8;
    const th = fontSize + 8;
    const ty = y - th >= 0 ? y : y + h + th;
    ctx.fillStyle = color;
    ctx.fillRect(x - ctx.lineWidth / 2, ty - th, tw, th);
    ctx.fillStyle = "#ffffff";
    ctx.fillText(label, x + 4 - ctx.lineWidth / 2, ty - 3);
    list.append(faceItem(face, list.children.length, bitmap));
  }
  canvas.dataset.labels = labels.join("|");
  canvas.dataset.boxes = JSON.stringify(data.faces.map((f) => [f.box.left * sx, f.box.top * sy, f.box.width * sx, f.box.height * sy]));
}

// -- calibration ----------------------------------------------------------------------------
let plotUrl = null;

async function loadCalibration() {
  const summary = $("#calibration-summary");
  const img = $("#calibration-plot");
  let report;
  try {
    report = await api("GET", "/v1/calibration");
  } catch (err) {
    if (err.code !== "not_enough_examples") throw err;
    img.hidden = true;
    summary.textContent = `Not enough data for a report yet: ${err.message.replace(/ \(not_enough_examples\)$/, "")}.`;
    summary.dataset.state = "not_enough_examples";
    return "Calibration: not enough examples yet";
  }
  const pct = (x) => (x === null ? "n/a" : `${(100 * x).toFixed(2)} %`);
  const targets = report.targets.map((t) => `${pct(t.target)} of strangers named: threshold ${t.threshold}`).join("; ");
  summary.textContent =
    `${report.people_with_pairs} people with 2+ examples, ${report.examples} examples: ${report.genuine_pairs} same-person and ` +
    `${report.impostor_pairs} different-people pairs. Equal error rate ${pct(report.eer.rate)} at ${report.eer.threshold}; ` +
    `threshold in use ${report.current_threshold}. ${targets}.`;
  summary.dataset.state = "report";
  const blob = await apiBlob("/v1/calibration/plot.png");
  if (plotUrl) URL.revokeObjectURL(plotUrl);
  plotUrl = URL.createObjectURL(blob);
  await new Promise((resolve, reject) => {
    img.onload = resolve;
    img.onerror = () => reject(new Error("the calibration plot did not load"));
    img.src = plotUrl;
  });
  img.hidden = false;
  return "Calibration report loaded";
}

// -- webcam -------------------------------------------------------------------------------
let stream = null;

async function startCamera() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) throw new Error("this browser has no camera access (needs https or localhost)");
  stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 1280 }, height: { ideal: 720 } }, audio: false });
  const video = $("#camera-video");
  video.srcObject = stream;
  video.classList.add("live");
  for (const id of ["#camera-teach", "#camera-identify", "#camera-stop"]) $(id).disabled = false;
  return "Camera on";
}

function stopCamera() {
  if (stream) stream.getTracks().forEach((t) => t.stop());
  stream = null;
  const video = $("#camera-video");
  video.srcObject = null;
  video.classList.remove("live");
  for (const id of ["#camera-teach", "#camera-identify", "#camera-stop"]) $(id).disabled = true;
  return "Camera off";
}

function captureFrame() {
  const video = $("#camera-video");
  if (!stream || !video.videoWidth) throw new Error("the camera is not ready yet");
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  return new Promise((resolve, reject) =>
    canvas.toBlob((b) => (b ? resolve(b) : reject(new Error("capture failed"))), "image/jpeg", 0.92),
  );
}

// -- wiring -------------------------------------------------------------------------------
async function run(task) {
  setStatus("Working…");
  try {
    setStatus(await task());
  } catch (err) {
    setStatus(err.message || String(err), true);
    if (err.code === "unauthorized") $("#api-key").focus();
  }
}

async function init() {
  const info = await api("GET", "/v1/info");
  $("#model").textContent = `${info.model.id} (${info.model.dim}-D) on ${info.device}`;
  await loadPeople();
  return "Ready";
}

document.addEventListener("DOMContentLoaded", () => {
  $("#api-key").value = apiKey();
  $("#auth-form").addEventListener("submit", (e) => {
    e.preventDefault();
    localStorage.setItem(KEY_STORE, $("#api-key").value.trim());
    run(init);
  });
  $("#teach-form").addEventListener("submit", (e) => {
    e.preventDefault();
    run(() => teachBlobs(Array.from($("#teach-files").files)));
  });
  $("#identify-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const file = $("#identify-file").files[0];
    run(() => (file ? identifyBlob(file) : Promise.reject(new Error("choose a photo first"))));
  });
  $("#people-refresh").addEventListener("click", () => run(async () => `${(await loadPeople()).total} people`));
  $("#calibration-load").addEventListener("click", () => run(loadCalibration));
  $("#identify-canvas").addEventListener("click", (e) => {
    const canvas = e.currentTarget;
    const rect = canvas.getBoundingClientRect();
    const index = faceAt(((e.clientX - rect.left) * canvas.width) / rect.width, ((e.clientY - rect.top) * canvas.height) / rect.height);
    if (index >= 0) selectFace(index);
  });
  $("#camera-start").addEventListener("click", () => run(startCamera));
  $("#camera-stop").addEventListener("click", () => run(async () => stopCamera()));
  $("#camera-teach").addEventListener("click", () => run(async () => teachBlobs([await captureFrame()])));
  $("#camera-identify").addEventListener("click", () => run(async () => identifyBlob(await captureFrame())));
  run(init);
});
