// NIfTI-1/NIfTI-2 reading for the viewer: gunzip with the browser's DecompressionStream, a header parser, the
// voxel-to-world affine (sform, else qform, else nibabel's fallback), and the voxel axes' nearest RAS directions.
// No third-party code: the layout follows the NIfTI-1 and NIfTI-2 headers (nifti1.h, nifti2.h).

export class NiftiError extends Error {}

const TYPES = {  // datatype code → [typed array, bytes per voxel]
  2: [Uint8Array, 1], 4: [Int16Array, 2], 8: [Int32Array, 4], 16: [Float32Array, 4], 64: [Float64Array, 8],
  256: [Int8Array, 1], 512: [Uint16Array, 2], 768: [Uint32Array, 4], 1024: [BigInt64Array, 8],
  1280: [BigUint64Array, 8],
};

export function isGzip(bytes) {
  return bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b;
}

async function inflate(bytes, format) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream(format));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

export async function gunzip(bytes) {
  try {
    return await inflate(bytes, "gzip");
  } catch (err) {
    throw new NiftiError(`corrupt or truncated gzip stream (${err.message})`);
  }
}

export async function inflateRaw(bytes) {
  return inflate(bytes, "deflate-raw");
}

function header(view) {
  const le = view.getInt32(0, true);
  const little = le === 348 || le === 540;
  const size = view.getInt32(0, little);
  if (size !== 348 && size !== 540) throw new NiftiError("not a NIfTI file (bad header size)");
  const v2 = size === 540;
  if (view.byteLength < size + 4) throw new NiftiError("truncated NIfTI header");
  const magic = String.fromCharCode(...new Uint8Array(view.buffer, view.byteOffset + (v2 ? 4 : 344), 3));
  if (magic === "ni1" || magic === "ni2") {
    throw new NiftiError("header of a .hdr/.img pair; use one single-file .nii or .nii.gz");
  }
  if (magic !== (v2 ? "n+2" : "n+1")) throw new NiftiError("not a NIfTI file (bad magic)");
  const i16 = (o) => view.getInt16(o, little);
  const i32 = (o) => view.getInt32(o, little);
  const f32 = (o) => view.getFloat32(o, little);
  const f64 = (o) => view.getFloat64(o, little);
  const i64 = (o) => Number(view.getBigInt64(o, little));
  const real = v2 ? f64 : f32;
  const h = { version: v2 ? 2 : 1, little };
  h.dim = Array.from({ length: 8 }, (_, i) => (v2 ? i64(16 + 8 * i) : i16(40 + 2 * i)));
  h.datatype = i16(v2 ? 12 : 70);
  h.pixdim = Array.from({ length: 8 }, (_, i) => real((v2 ? 104 : 76) + (v2 ? 8 : 4) * i));
  h.voxOffset = v2 ? i64(168) : f32(108);
  h.slope = real(v2 ? 176 : 112);
  h.inter = real(v2 ? 184 : 116);
  h.qformCode = v2 ? i32(344) : i16(252);
  h.sformCode = v2 ? i32(348) : i16(254);
  const q = (v2 ? [352, 360, 368, 376, 384, 392] : [256, 260, 264, 268, 272, 276]).map(real);
  h.quatern = q.slice(0, 3);
  h.qoffset = q.slice(3);
  const srow = v2 ? 400 : 280;
  h.srow = [0, 1, 2].map((r) => [0, 1, 2, 3].map((c) => real(srow + (v2 ? 32 : 16) * r + (v2 ? 8 : 4) * c)));
  return h;
}

function qformAffine(h) {
  const [b, c, d] = h.quatern;
  const a = Math.sqrt(Math.max(0, 1 - (b * b + c * c + d * d)));
  const R = [
    [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
    [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
    [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b],
  ];
  const qfac = h.pixdim[0] < 0 ? -1 : 1;
  const zooms = [h.pixdim[1], h.pixdim[2], h.pixdim[3] * qfac];
  return [0, 1, 2].map((r) => [...[0, 1, 2].map((k) => R[r][k] * zooms[k]), h.qoffset[r]]);
}

export function affineOf(h) {
  if (h.sformCode > 0) return h.srow.map((row) => row.slice());
  if (h.qformCode > 0) return qformAffine(h);
  // nibabel's fallback for an unoriented image: zooms on the diagonal, x flipped, the volume centred
  const zooms = [1, 2, 3].map((i) => h.pixdim[i] || 1);
  const sign = [-1, 1, 1];
  return [0, 1, 2].map((r) => [0, 1, 2].map((k) => (r === k ? sign[r] * zooms[r] : 0))
    .concat(-sign[r] * zooms[r] * (h.dim[r + 1] - 1) / 2));
}

// Parse uncompressed (or gzipped) NIfTI bytes into {dims:[nx,ny,nz], frames, data, affine, datatype, ...}.
// `data` holds every frame (voxel index i + nx*(j + ny*(k + nz*t))), scaled by scl_slope/scl_inter when set.
export async function readNifti(input) {
  let bytes = input instanceof Uint8Array ? input : new Uint8Array(input);
  if (isGzip(bytes)) bytes = await gunzip(bytes);
  if (bytes.length < 352) throw new NiftiError("not a NIfTI file (shorter than a header)");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const h = header(view);
  const nd = h.dim[0];
  if (nd < 1 || nd > 7) throw new NiftiError(`corrupt NIfTI header (dim[0] = ${nd})`);
  const shape = h.dim.slice(1, nd + 1);
  if (shape.some((n) => !(n >= 1))) throw new NiftiError(`corrupt NIfTI header (shape ${shape.join("×")})`);
  if (shape.slice(4).some((n) => n !== 1) || nd < 3) {
    throw new NiftiError(`expected a 3D image or a 4D image with channels last, got shape ${shape.join("×")}`);
  }
  const type = TYPES[h.datatype];
  if (!type) throw new NiftiError(`unsupported NIfTI datatype ${h.datatype} (complex, RGB or bit images)`);
  const [Arr, size] = type;
  const dims = shape.slice(0, 3);
  const frames = shape[3] || 1;
  const count = dims[0] * dims[1] * dims[2] * frames;
  const offset = Math.max(Math.round(h.voxOffset), h.version === 2 ? 544 : 352);
  if (bytes.length < offset + count * size) {
    throw new NiftiError(`truncated NIfTI (${bytes.length} of ${offset + count * size} bytes)`);
  }
  const copy = bytes.slice(offset, offset + count * size);  // aligned, and endian-swapped below if needed
  if (!h.little && size > 1) {
    for (let i = 0; i < copy.length; i += size) copy.subarray(i, i + size).reverse();
  }
  let data = new Arr(copy.buffer);
  const scaled = h.slope !== 0 && Number.isFinite(h.slope) && (h.slope !== 1 || h.inter !== 0);
  if (scaled || size === 8) {
    const out = new Float32Array(count);
    const slope = scaled ? h.slope : 1;
    const inter = scaled && Number.isFinite(h.inter) ? h.inter : 0;
    for (let i = 0; i < count; i++) out[i] = Number(data[i]) * slope + inter;
    data = out;
  }
  const affine = affineOf(h);
  if (affine.flat().some((v) => !Number.isFinite(v))) throw new NiftiError("the header's affine is not finite");
  return { dims, frames, data, affine, datatype: h.datatype, version: h.version, header: h };
}

// For each voxel axis, the RAS world axis it runs along most closely and whether it runs backwards:
// the permutation maximising the summed |direction cosines| (as nibabel's io_orientation for non-oblique grids).
export function orientation(affine) {
  const cols = [0, 1, 2].map((k) => [0, 1, 2].map((r) => affine[r][k]));
  const norms = cols.map((c) => Math.hypot(...c) || 1);
  const perms = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
  let best = perms[0];
  let bestScore = -1;
  for (const p of perms) {
    const score = p.reduce((s, w, k) => s + Math.abs(cols[k][w]) / norms[k], 0);
    if (score > bestScore + 1e-9) [best, bestScore] = [p, score];
  }
  return { axisOf: best, flip: best.map((w, k) => cols[k][w] < 0), spacing: norms };
}

// Index mapping from RAS-ordered coordinates (x→R, y→A, z→S, counted from 0) to the file's linear voxel index.
export function rasGrid(dims, affine) {
  const o = orientation(affine);
  const strides = [1, dims[0], dims[0] * dims[1]];
  const shape = [0, 0, 0];
  const step = [0, 0, 0];
  const spacing = [1, 1, 1];
  let base = 0;
  o.axisOf.forEach((w, k) => {
    shape[w] = dims[k];
    spacing[w] = o.spacing[k];
    step[w] = o.flip[k] ? -strides[k] : strides[k];
    if (o.flip[k]) base += (dims[k] - 1) * strides[k];
  });
  const index = (x, y, z) => base + x * step[0] + y * step[1] + z * step[2];
  const voxel = (x, y, z) => {  // RAS coordinates → the file's (i, j, k)
    const ras = [x, y, z];
    return o.axisOf.map((w, k) => (o.flip[k] ? dims[k] - 1 - ras[w] : ras[w]));
  };
  return { shape, spacing, step, base, index, voxel, frameSize: dims[0] * dims[1] * dims[2] };
}
