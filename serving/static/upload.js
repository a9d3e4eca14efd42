// Study files (one NIfTI per channel, or one 4D NIfTI; picked or dropped), the prediction request with its
// progress, and the result panel (QA warnings, per-class volumes and lesion counts, uncertainty, downloads).

import { readNifti } from "./nifti.js";
import { unzip } from "./unzip.js";
import { classColour } from "./views.js";

const $ = (id) => document.getElementById(id);

// The channel a file name names: the longest channel name it contains (t1gd before t1), case-insensitive.
export function matchChannel(fileName, channels) {
  const name = fileName.toLowerCase();
  const hits = channels.filter((c) => name.includes(c.toLowerCase()));
  return hits.sort((a, b) => b.length - a.length)[0];
}

function filesOf(file) {
  const dt = new DataTransfer();
  dt.items.add(file);
  return dt.files;
}

// QA warnings of a summary: `warnings` and `qa.warnings` (strings, or objects with a message).
export function qaWarnings(summary) {
  const qa = summary.qa || {};
  return [...(summary.warnings || []), ...(Array.isArray(qa) ? qa : qa.warnings || [])]
    .map((w) => (typeof w === "string" ? w : w.message || JSON.stringify(w)));
}

export class Uploader {
  constructor(api, ui) {
    this.api = api;
    this.ui = ui;
    this.channels = [];
    this.picked = {};  // channel → File
    this.single = null;  // one 4D File
    this.parsed = new WeakMap();  // File → Promise of the parsed NIfTI
    this.links = [];
    $("file-4d").addEventListener("change", () => this.useFiles([...$("file-4d").files], true));
    $("upload-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.segment();
    });
    const zone = $("drop-zone");
    document.addEventListener("dragover", (e) => {
      e.preventDefault();
      zone.classList.add("over");
    });
    document.addEventListener("dragleave", () => zone.classList.remove("over"));
    document.addEventListener("drop", (e) => {
      e.preventDefault();
      zone.classList.remove("over");
      if (!$("upload-form").hidden) this.useFiles([...e.dataTransfer.files], false);
    });
  }

  setChannels(channels) {
    this.channels = channels;
    this.picked = {};
    this.single = null;
    const rows = channels.map((ch) => {
      const row = document.createElement("div");
      row.className = "row channel-row";
      const label = document.createElement("label");
      label.textContent = ch;
      const input = document.createElement("input");
      input.type = "file";
      input.accept = ".nii,.gz,.nii.gz";
      input.dataset.channel = ch;
      input.id = `file-${ch}`;
      label.htmlFor = input.id;
      input.addEventListener("change", () => {
        if (input.files.length) this.assign(ch, input.files[0]);
      });
      row.append(label, input);
      return row;
    });
    $("channel-inputs").replaceChildren(...rows);
    this.update();
  }

  parse(file) {
    if (!this.parsed.has(file)) {
      this.parsed.set(file, file.arrayBuffer().then(readNifti).catch((err) => {
        throw new Error(`${file.name}: cannot be read as NIfTI (${err.message})`);
      }));
    }
    return this.parsed.get(file);
  }

  assign(channel, file) {
    this.single = null;
    this.picked[channel] = file;
    this.update();
  }

  // Dropped or picked files: one 4D image, or files matched to channels by name (the rest in order).
  async useFiles(files, forceSingle) {
    this.ui.showError("");
    if (!files.length) return;
    try {
      const one = files.length === 1;
      if (one && (forceSingle || this.channels.length === 1 || (await this.parse(files[0])).frames > 1)) {
        this.single = files[0];
        this.picked = {};
      } else {
        this.single = null;
        const rest = [];
        for (const f of files) {
          const ch = matchChannel(f.name, this.channels);
          if (ch && !this.picked[ch]) this.picked[ch] = f;
          else rest.push(f);
        }
        for (const f of rest) {
          const free = this.channels.find((c) => !this.picked[c]);
          if (!free) throw new Error(`more files than the model's ${this.channels.length} channels: ${f.name}`);
          this.picked[free] = f;
        }
      }
    } catch (err) {
      this.ui.showError(err.message);
    }
    await this.update();
  }

  ready() {
    return Boolean(this.single) || (this.channels.length > 0 && this.channels.every((c) => this.picked[c]));
  }

  // Show the assignment, and the study as soon as every channel has a file.
  async update() {
    for (const row of document.querySelectorAll(".channel-row")) {
      const input = row.querySelector("input");
      const file = this.single ? null : this.picked[input.dataset.channel];
      if (file && input.files[0] !== file) {  // a dropped file: show it in the channel's own input
        input.files = filesOf(file);
      } else if (!file) {
        input.value = "";
      }
    }
    $("four-d-note").hidden = !this.single;
    if (this.single) {
      $("four-d-note").textContent = `${this.single.name}: one 4D image, its volumes in the model's channel order ` +
        `(${this.channels.join(", ")})`;
    }
    const four = $("file-4d");
    if (!this.single) four.value = "";
    else if (four.files[0] !== this.single) four.files = filesOf(this.single);
    $("segment").disabled = !this.ready();
    if (!this.ready()) return;
    try {
      await this.display();
    } catch (err) {
      $("segment").disabled = true;
      this.ui.showError(err.message);
    }
  }

  async display() {
    let channels;
    let ref;
    if (this.single) {
      ref = await this.parse(this.single);
      const fit = ref.frames === this.channels.length;
      const names = fit ? this.channels : [...Array(ref.frames).keys()].map((i) => `frame ${i}`);
      const size = ref.dims[0] * ref.dims[1] * ref.dims[2];
      channels = names.map((name, i) => ({ name, data: ref.data, offset: i * size }));
      if (ref.frames !== this.channels.length) {
        this.ui.setStatus(`The 4D image has ${ref.frames} volumes; the model expects ${this.channels.length} ` +
          `(${this.channels.join(", ")}).`);
      }
    } else {
      const images = await Promise.all(this.channels.map((c) => this.parse(this.picked[c])));
      ref = images[0];
      channels = [];
      images.forEach((img, i) => {
        if (img.dims.join() !== ref.dims.join()) {
          this.ui.showError(`${this.channels[i]} (${img.dims.join("×")}) is not on the grid of ${this.channels[0]} ` +
            `(${ref.dims.join("×")}); the server will refuse it.`);
        } else {
          channels.push({ name: this.channels[i], data: img.data, offset: 0 });
        }
      });
    }
    this.ui.showStudy(channels, ref.affine, ref.dims);
    $("results").hidden = true;
    this.ui.setStatus(`Study loaded (${ref.dims.join(" × ")} voxels). Press Segment.`);
  }

  form() {
    const form = new FormData();
    if (this.single) form.append("image", this.single, this.single.name);
    else for (const c of this.channels) form.append(c, this.picked[c], this.picked[c].name);
    return form;
  }

  async segment() {
    if (!this.ready()) return;
    const outputs = ["mask"];
    if ($("want-uncertainty").checked) outputs.push("uncertainty");
    if ($("want-probabilities").checked) outputs.push("probabilities");
    const form = this.form();
    const bar = $("progress");
    const started = performance.now();
    let timer = null;
    const progress = (phase, fraction) => {
      bar.hidden = false;
      if (fraction === null) bar.removeAttribute("value");
      else bar.value = fraction;
      if (phase === "upload") {
        this.ui.setStatus(`Uploading… ${fraction === null ? "" : Math.round(fraction * 100) + "%"}`);
      }
      if (phase === "wait" && !timer) {
        const tick = () => this.ui.setStatus(`Segmenting… ${((performance.now() - started) / 1000).toFixed(0)} s`);
        tick();
        timer = setInterval(tick, 500);
      }
      if (phase === "download") this.ui.setStatus("Receiving the result…");
    };
    this.ui.showError("");
    $("segment").disabled = true;
    try {
      const res = await this.api.predict(form, { format: "zip", outputs: outputs.join(",") }, progress);
      this.ui.setStatus("Decoding the result…");
      const members = await unzip(res.body);
      if (!members["mask.nii.gz"] || !members["summary.json"]) throw new Error("the server's answer holds no mask");
      const summary = JSON.parse(new TextDecoder().decode(members["summary.json"]));
      delete members["summary.json"];
      const mask = await readNifti(members["mask.nii.gz"]);
      const unc = members["uncertainty.nii.gz"] ? await readNifti(members["uncertainty.nii.gz"]) : null;
      this.ui.showResult(mask, unc, summary.uncertainty && summary.uncertainty.max_entropy);
      this.results(summary, members);
      this.ui.setStatus(`Done in ${((performance.now() - started) / 1000).toFixed(1)} s.`);
    } catch (err) {
      this.ui.setStatus("");
      this.ui.showError(err.message);
    } finally {
      clearInterval(timer);
      bar.hidden = true;
      $("segment").disabled = !this.ready();
    }
  }

  results(summary, members) {
    $("results").hidden = false;
    const grid = (summary.shape || []).join(" × ");
    $("summary-model").textContent = `${summary.model || ""} v${summary.version ?? "?"} · grid ${grid}`;
    const warnings = qaWarnings(summary);
    $("warnings").replaceChildren(...(warnings.length ? warnings : ["No QA warnings."]).map((w) => {
      const li = document.createElement("li");
      li.textContent = w;
      if (!warnings.length) li.style.color = "inherit";
      return li;
    }));
    const u = summary.uncertainty;
    $("uncertainty-score").textContent = u && typeof u.score === "number"
      ? `Uncertainty: mean entropy ${u.score.toFixed(3)} of at most ${Number(u.max_entropy).toFixed(3)} ` +
        `over the ${u.region}` +
        (u.tta_members ? ` (${u.tta_members} TTA member${u.tta_members > 1 ? "s" : ""})` : "")
      : "";
    const labels = (this.ui.state.model && this.ui.state.model.labels) || {};
    const byName = Object.fromEntries(Object.entries(labels).map(([k, v]) => [v, Number(k)]));
    const rows = Object.entries(summary.classes || {}).map(([name, c]) => {
      const tr = document.createElement("tr");
      tr.dataset.class = name;
      const first = document.createElement("td");
      if (byName[name]) {
        const sw = document.createElement("span");
        sw.className = "swatch";
        sw.style.background = `rgb(${classColour(byName[name]).join(",")})`;
        first.append(sw, " ");
      }
      first.append(name);
      const cells = [c.volume_ml.toFixed(2), String(c.voxels), String(c.lesions)].map((t) => {
        const td = document.createElement("td");
        td.textContent = t;
        return td;
      });
      tr.append(first, ...cells);
      return tr;
    });
    $("volumes").tBodies[0].replaceChildren(...rows);
    for (const url of this.links) URL.revokeObjectURL(url);
    this.links = [];
    const stem = (this.single || this.picked[this.channels[0]]).name.replace(/\.nii(\.gz)?$/i, "");
    const files = { ...members, "summary.json": new TextEncoder().encode(JSON.stringify(summary, null, 2)) };
    const rank = (name) => (name === "mask.nii.gz" ? "0" : name === "summary.json" ? "2" : "1") + name;
    const ordered = Object.entries(files).sort(([a], [b]) => (rank(a) < rank(b) ? -1 : 1));
    $("downloads").replaceChildren(...ordered.map(([name, bytes]) => {
      const a = document.createElement("a");
      a.href = URL.createObjectURL(new Blob([bytes]));
      this.links.push(a.href);
      a.download = `${stem}_${name}`;
      a.textContent = `download ${name.replace(/\.nii\.gz$/, "")}`;
      a.dataset.file = name;
      return a;
    }));
  }
}
