// Fewface web console: teach, identify, manage people through the native /v1 API.
// No build step, no dependencies. The API key (if the server wants one) is kept in localStorage.
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

function slug(name) {
  const s = name.toLocaleLowerCase().replace(/[^\p{L}\p{N}]+/gu, "-").replace(/^-+|-+$/g, "").slice(0, 96);
  return s || `person-${Date.now().toString(36)}`;
}

// -- people -------------------------------------------------------------------------------
async function loadPeople() {
  const data = await api("GET", "/v1/people?limit=1000");
  $("#counts").textContent = `${data.total} people · ${data.faces} faces`;
  const tbody = $("#people");
  tbody.replaceChildren();
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
    countCell.textContent = String(p.face_count);
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

async function identifyBlob(blob) {
  const form = new FormData();
  form.append("file", blob, blob.name || "capture.jpg");
  const data = await api("POST", "/v1/identify", form);
  const bitmap = await createImageBitmap(blob);
  draw(bitmap, data);
  const names = data.faces.map((f) => (f.matched ? f.match.name : "unknown"));
  return `${data.face_count} face(s): ${names.join(", ") || "none"}`;
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
    const li = document.createElement("li");
    li.className = face.matched ? "matched" : "unknown";
    li.textContent = face.matched
      ? `${face.match.name} (${face.match.person_id}), similarity ${face.match.similarity.toFixed(3)}`
      : `unknown face (best similarity ${face.similarity === null ? "n/a" : face.similarity.toFixed(3)})`;
    list.append(li);
  }
  canvas.dataset.labels = labels.join("|");
  canvas.dataset.boxes = JSON.stringify(data.faces.map((f) => [f.box.left * sx, f.box.top * sy, f.box.width * sx, f.box.height * sy]));
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
  $("#camera-start").addEventListener("click", () => run(startCamera));
  $("#camera-stop").addEventListener("click", () => run(async () => stopCamera()));
  $("#camera-teach").addEventListener("click", () => run(async () => teachBlobs([await captureFrame()])));
  $("#camera-identify").addEventListener("click", () => run(async () => identifyBlob(await captureFrame())));
  run(init);
});
