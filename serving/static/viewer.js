// The viewer page: connect with the API key, pick a study, run the prediction, and show image, mask and
// uncertainty in three orthogonal views with the summary and downloads. See upload.js for files and requests.

import { Api } from "./api.js";
import { rasGrid } from "./nifti.js";
import { Uploader } from "./upload.js";
import { SliceView, classColour } from "./views.js";

const $ = (id) => document.getElementById(id);

const state = {
  grid: null, channels: [], channel: 0, window: 1, level: 0, cursor: [0, 0, 0], convention: "radiological",
  mask: null, showMask: true, opacity: 0.5, hidden: new Set(), unc: null, showUnc: false, uncOpacity: 0.7,
  crosshair: true, model: null,
};

const viewer = {
  state,
  setCursor(c) {
    state.cursor = c.map((v, i) => Math.min(state.grid.shape[i] - 1, Math.max(0, Math.round(v))));
    drawAll();
  },
  adjustWindow(dx, dy) {
    const range = Math.max(1e-6, Number($("window").max) - Number($("window").min));
    setWindow(state.window + (dx * range) / 400, state.level - (dy * range) / 400);
  },
};

const views = ["axial", "coronal", "sagittal"].map((p) => new SliceView($(`view-${p}`), p, viewer));
const api = new Api(new URL("../", window.location.href));

export function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

export function setStatus(text) {
  $("status").textContent = text;
}

function drawAll() {
  for (const v of views) v.draw();
  cursorInfo();
}

function layout() {
  if (!state.grid) return;
  const box = Math.max(200, Math.min(420, ($("views").clientWidth - 60) / 3));
  for (const v of views) v.resize(box);
  drawAll();
}

function cursorInfo() {
  if (!state.grid) {
    $("cursor-info").textContent = "";
    return;
  }
  const [x, y, z] = state.cursor;
  const idx = state.grid.index(x, y, z);
  const chan = state.channels[state.channel];
  const parts = [`voxel (${state.grid.voxel(x, y, z).join(", ")})`,
    `${chan.name} ${fmt(chan.data[chan.offset + idx])}`];
  if (state.mask) parts.push(`label ${labelName(state.mask.data[idx])}`);
  if (state.unc) parts.push(`entropy ${fmt(state.unc.data[idx])}`);
  $("cursor-info").textContent = parts.join(" · ");
}

function fmt(v) {
  return Math.abs(v) >= 100 ? v.toFixed(0) : Number(v).toPrecision(3);
}

function labelName(value) {
  const labels = (state.model && state.model.labels) || {};
  return labels[value] !== undefined ? `${value} ${labels[value]}` : `${value}`;
}

// Window/level sliders span the channel's range; "auto" picks its 0.5–99.5 percentiles inside the body.
function channelRange(chan) {
  const n = state.grid.frameSize;
  const stride = Math.max(1, Math.floor(n / 200000));
  const values = [];
  for (let i = 0; i < n; i += stride) {
    const v = chan.data[chan.offset + i];
    if (v !== 0 && Number.isFinite(v)) values.push(v);
  }
  if (!values.length) return { min: 0, max: 1, lo: 0, hi: 1 };
  values.sort((a, b) => a - b);
  const q = (p) => values[Math.min(values.length - 1, Math.floor(p * values.length))];
  return { min: Math.min(0, values[0]), max: values[values.length - 1], lo: q(0.005), hi: q(0.995) };
}

function autoWindow() {
  const r = channelRange(state.channels[state.channel]);
  const span = Math.max(r.max - r.min, 1e-6);
  $("window").min = span / 1000;
  $("window").max = span * 2;
  $("level").min = r.min - span / 2;
  $("level").max = r.max + span / 2;
  setWindow(Math.max(r.hi - r.lo, span / 1000), (r.hi + r.lo) / 2);
}

function setWindow(window, level) {
  state.window = Math.max(window, Number($("window").min) || 1e-6);
  state.level = level;
  $("window").value = state.window;
  $("level").value = state.level;
  $("window-value").textContent = fmt(state.window);
  $("level-value").textContent = fmt(state.level);
  drawAll();
}

function legend() {
  const box = $("legend");
  box.replaceChildren();
  const labels = (state.model && state.model.labels) || {};
  for (const [value, name] of Object.entries(labels)) {
    const k = Number(value);
    if (k === 0) continue;
    const label = document.createElement("label");
    const check = document.createElement("input");
    check.type = "checkbox";
    check.checked = !state.hidden.has(k);
    check.addEventListener("change", () => {
      if (check.checked) state.hidden.delete(k);
      else state.hidden.add(k);
      drawAll();
    });
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = `rgb(${classColour(k).join(",")})`;
    label.append(check, swatch, `${k} ${name}`);
    label.dataset.class = String(k);
    box.append(label);
  }
}

// A new study: channels [{name, data, offset}] on one grid; clears any previous result.
export function showStudy(channels, affine, dims) {
  state.grid = rasGrid(dims, affine);
  state.channels = channels;
  state.channel = 0;
  state.mask = null;
  state.unc = null;
  state.cursor = state.grid.shape.map((n) => Math.floor(n / 2));
  $("channel").replaceChildren(...channels.map((c, i) => new Option(c.name, String(i))));
  $("display").disabled = false;
  $("uncertainty-row").hidden = true;
  autoWindow();
  layout();
}

// A result: the mask (and uncertainty) NIfTI on the study's grid.
export function showResult(mask, uncertainty, maxEntropy) {
  const same = (nii) => {
    const g = rasGrid(nii.dims, nii.affine);
    return g.shape.every((n, i) => n === state.grid.shape[i]) && g.step.every((s, i) => s === state.grid.step[i]);
  };
  if (!same(mask)) throw new Error("the returned mask is not on the uploaded image's grid");
  state.mask = { data: mask.data, bitmask: state.model.label_encoding === "bitmask" };
  state.unc = null;
  if (uncertainty && same(uncertainty)) {
    const data = uncertainty.data.subarray(0, state.grid.frameSize);
    let max = maxEntropy || 0;
    if (!max) for (let i = 0; i < data.length; i++) max = Math.max(max, data[i]);
    state.unc = { data, max: max || 1 };
  }
  $("uncertainty-row").hidden = !state.unc;
  $("show-uncertainty").checked = state.showUnc = false;
  // jump to the axial slice with the most foreground
  const counts = new Array(state.grid.shape[2]).fill(0);
  const [nx, ny, nz] = state.grid.shape;
  for (let z = 0; z < nz; z++) {
    for (let y = 0; y < ny; y++) for (let x = 0; x < nx; x++) if (mask.data[state.grid.index(x, y, z)] > 0) counts[z]++;
  }
  const best = counts.indexOf(Math.max(...counts));
  if (counts[best] > 0) state.cursor[2] = best;
  drawAll();
}

function wire() {
  $("key-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    api.setKey($("api-key").value);
    await connect();
  });
  $("channel").addEventListener("change", () => {
    state.channel = Number($("channel").value);
    autoWindow();
  });
  $("window").addEventListener("input", () => setWindow(Number($("window").value), state.level));
  $("level").addEventListener("input", () => setWindow(state.window, Number($("level").value)));
  $("auto-window").addEventListener("click", autoWindow);
  $("convention").addEventListener("change", () => {
    state.convention = $("convention").value;
    drawAll();
  });
  $("show-mask").addEventListener("change", () => { state.showMask = $("show-mask").checked; drawAll(); });
  $("opacity").addEventListener("input", () => { state.opacity = Number($("opacity").value); drawAll(); });
  $("show-uncertainty").addEventListener("change", () => { state.showUnc = $("show-uncertainty").checked; drawAll(); });
  $("show-crosshair").addEventListener("change", () => { state.crosshair = $("show-crosshair").checked; drawAll(); });
  window.addEventListener("resize", layout);
}

async function connect() {
  showError("");
  setStatus("Connecting…");
  try {
    state.model = await api.model();
  } catch (err) {
    state.model = null;
    $("upload-form").hidden = true;
    $("model-name").textContent = "not connected";
    setStatus("");
    showError(err.message);
    return;
  }
  const m = state.model;
  $("model-name").textContent =
    `${m.name} v${m.version} · ${m.architecture || "model"} · channels ${m.channels.join(", ")}`;
  setStatus("Connected. Choose or drop the study's NIfTI files.");
  uploader.setChannels(m.channels);
  $("upload-form").hidden = false;
  legend();
}

const uploader = new Uploader(api, { state, showStudy, showResult, showError, setStatus });
wire();
if (api.key) {
  $("api-key").value = api.key;
  connect();
}
window.voxrayViewer = { state, views };  // for the browser tests and the console; holds no secret
