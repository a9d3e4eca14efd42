// Orthogonal slice views on canvases: grey image with window/level, the mask in per-class colours, the uncertainty
// map as a heat overlay, a crosshair, and orientation markers. Coordinates are RAS-ordered voxel indices (see
// nifti.js rasGrid), so each view shows the patient the same way whatever the file's axis order.

// Class k → colour; serving tests and voxray.preprocessing.overlay.PALETTE hold the same list (keep them equal).
export const PALETTE = [
  [230, 25, 75], [60, 180, 75], [0, 130, 200], [255, 225, 25], [245, 130, 48], [145, 30, 180],
  [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [170, 110, 40],
];

export function classColour(k) {
  return PALETTE[(k - 1) % PALETTE.length];
}

// The class a mask value shows: the value itself (index encoding) or its highest set bit (bitmask encoding).
export function displayClass(value, bitmask) {
  if (!bitmask || value === 0) return value;
  return 32 - Math.clz32(value);
}

const HEAT = [[13, 8, 135], [204, 71, 120], [240, 249, 33]];

function heat(t) {
  const s = Math.min(1, Math.max(0, t)) * (HEAT.length - 1);
  const i = Math.min(HEAT.length - 2, Math.floor(s));
  const f = s - i;
  return HEAT[i].map((c, n) => c + (HEAT[i + 1][n] - c) * f);
}

// Per plane: the fixed RAS axis, the horizontal and vertical axes, and the letters at each end of the RAS axes.
const PLANES = {
  axial: { fixed: 2, h: 0, v: 1 },
  coronal: { fixed: 1, h: 0, v: 2 },
  sagittal: { fixed: 0, h: 1, v: 2 },
};
const ENDS = [["L", "R"], ["P", "A"], ["I", "S"]];

export class SliceView {
  constructor(canvas, plane, viewer) {
    this.canvas = canvas;
    this.plane = plane;
    this.viewer = viewer;
    this.spec = PLANES[plane];
    this.off = document.createElement("canvas");
    this.dragging = null;
    canvas.addEventListener("pointerdown", (e) => this.down(e));
    canvas.addEventListener("pointermove", (e) => this.move(e));
    canvas.addEventListener("pointerup", () => { this.dragging = null; });
    canvas.addEventListener("contextmenu", (e) => e.preventDefault());
    canvas.addEventListener("wheel", (e) => {
      e.preventDefault();
      this.step(e.deltaY < 0 ? 1 : -1);
    }, { passive: false });
    canvas.addEventListener("keydown", (e) => {
      const d = { ArrowUp: 1, PageUp: 1, ArrowDown: -1, PageDown: -1 }[e.key];
      if (d) {
        e.preventDefault();
        this.step(d);
      }
    });
  }

  // Horizontal / vertical reversal: the top shows the high end (A or S); the left shows R in radiological
  // convention for axial and coronal views; sagittal views show anterior on the left.
  axes() {
    const { h, v } = this.spec;
    const reverseH = this.plane === "sagittal" ? true : this.viewer.state.convention === "radiological";
    return { h, v, reverseH, reverseV: true };
  }

  markers() {
    const { h, v, reverseH } = this.axes();
    return { left: ENDS[h][reverseH ? 1 : 0], right: ENDS[h][reverseH ? 0 : 1], top: ENDS[v][1], bottom: ENDS[v][0] };
  }

  // Display pixel (u, v) of the voxel grid → RAS coordinates, with the fixed axis at the cursor.
  ras(u, v) {
    const { h, v: va, reverseH } = this.axes();
    const shape = this.viewer.state.grid.shape;
    const out = this.viewer.state.cursor.slice();
    out[h] = reverseH ? shape[h] - 1 - u : u;
    out[va] = shape[va] - 1 - v;
    return out;
  }

  step(d) {
    const st = this.viewer.state;
    if (!st.grid) return;
    const c = st.cursor.slice();
    const f = this.spec.fixed;
    c[f] = Math.min(st.grid.shape[f] - 1, Math.max(0, c[f] + d));
    this.viewer.setCursor(c);
  }

  voxelAt(e) {
    const st = this.viewer.state;
    const { h, v } = this.axes();
    const r = this.canvas.getBoundingClientRect();
    const u = Math.floor(((e.clientX - r.left) / r.width) * st.grid.shape[h]);
    const w = Math.floor(((e.clientY - r.top) / r.height) * st.grid.shape[v]);
    return [Math.min(st.grid.shape[h] - 1, Math.max(0, u)), Math.min(st.grid.shape[v] - 1, Math.max(0, w))];
  }

  down(e) {
    if (!this.viewer.state.grid) return;
    this.canvas.setPointerCapture(e.pointerId);
    this.canvas.focus();
    const contrast = e.button === 2 || e.shiftKey;
    this.dragging = { contrast, x: e.clientX, y: e.clientY };
    if (!contrast) this.viewer.setCursor(this.ras(...this.voxelAt(e)));
  }

  move(e) {
    if (!this.dragging) return;
    if (this.dragging.contrast) {
      this.viewer.adjustWindow(e.clientX - this.dragging.x, e.clientY - this.dragging.y);
      this.dragging.x = e.clientX;
      this.dragging.y = e.clientY;
    } else {
      this.viewer.setCursor(this.ras(...this.voxelAt(e)));
    }
  }

  // Size the canvas to `box` CSS pixels at the voxels' physical aspect ratio.
  resize(box) {
    const st = this.viewer.state;
    const { h, v } = this.axes();
    const mmW = st.grid.shape[h] * st.grid.spacing[h];
    const mmH = st.grid.shape[v] * st.grid.spacing[v];
    const scale = box / Math.max(mmW, mmH);
    this.canvas.width = Math.max(1, Math.round(mmW * scale));
    this.canvas.height = Math.max(1, Math.round(mmH * scale));
  }

  draw() {
    const st = this.viewer.state;
    const ctx = this.canvas.getContext("2d");
    if (!st.grid) {
      ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
      return;
    }
    const { h, v, reverseH } = this.axes();
    const [w, hgt] = [st.grid.shape[h], st.grid.shape[v]];
    this.off.width = w;
    this.off.height = hgt;
    const octx = this.off.getContext("2d");
    const img = octx.createImageData(w, hgt);
    const px = img.data;
    const g = st.grid;
    const origin = this.ras(0, 0);
    const start = g.index(...origin);
    const du = reverseH ? -g.step[h] : g.step[h];
    const dv = -g.step[v];
    const chan = st.channels[st.channel];
    const lo = st.level - st.window / 2;
    const inv = 255 / Math.max(st.window, 1e-9);
    const mask = st.mask && st.showMask ? st.mask : null;
    const alpha = st.opacity;
    const unc = st.unc && st.showUnc ? st.unc : null;
    for (let r = 0; r < hgt; r++) {
      let idx = start + r * dv;
      let p = r * w * 4;
      for (let c = 0; c < w; c++, idx += du, p += 4) {
        let grey = (chan.data[chan.offset + idx] - lo) * inv;
        grey = grey < 0 ? 0 : grey > 255 ? 255 : grey;
        let [red, green, blue] = [grey, grey, grey];
        if (mask) {
          const k = displayClass(mask.data[idx], mask.bitmask);
          if (k > 0 && !st.hidden.has(k)) {
            const col = classColour(k);
            red = red * (1 - alpha) + col[0] * alpha;
            green = green * (1 - alpha) + col[1] * alpha;
            blue = blue * (1 - alpha) + col[2] * alpha;
          }
        }
        if (unc) {
          const t = unc.data[idx] / unc.max;
          if (t > 0.02) {
            const col = heat(t);
            const a = Math.min(1, t) * st.uncOpacity;
            red = red * (1 - a) + col[0] * a;
            green = green * (1 - a) + col[1] * a;
            blue = blue * (1 - a) + col[2] * a;
          }
        }
        px[p] = red;
        px[p + 1] = green;
        px[p + 2] = blue;
        px[p + 3] = 255;
      }
    }
    octx.putImageData(img, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(this.off, 0, 0, this.canvas.width, this.canvas.height);
    if (st.crosshair) this.drawCrosshair(ctx, w, hgt);
    this.drawMarkers(ctx);
  }

  drawCrosshair(ctx, w, hgt) {
    const st = this.viewer.state;
    const { h, v, reverseH } = this.axes();
    const u = reverseH ? st.grid.shape[h] - 1 - st.cursor[h] : st.cursor[h];
    const r = st.grid.shape[v] - 1 - st.cursor[v];
    const x = Math.floor((u + 0.5) * (this.canvas.width / w)) + 0.5;
    const y = Math.floor((r + 0.5) * (this.canvas.height / hgt)) + 0.5;
    ctx.strokeStyle = "rgba(255, 255, 0, 0.55)";
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(x, 0);
    ctx.lineTo(x, this.canvas.height);
    ctx.moveTo(0, y);
    ctx.lineTo(this.canvas.width, y);
    ctx.stroke();
  }

  drawMarkers(ctx) {
    const m = this.markers();
    const [W, H] = [this.canvas.width, this.canvas.height];
    ctx.font = "bold 14px sans-serif";
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    ctx.lineWidth = 3;
    ctx.strokeStyle = "black";
    ctx.fillStyle = "white";
    const at = [[m.left, 9, H / 2], [m.right, W - 9, H / 2], [m.top, W / 2, 10], [m.bottom, W / 2, H - 10]];
    for (const [text, x, y] of at) {
      ctx.strokeText(text, x, y);
      ctx.fillText(text, x, y);
    }
  }
}
