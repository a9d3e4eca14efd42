// Reading the zip that POST /v1/predict?outputs=… returns: the central directory, then each member (stored, or
// deflated via the browser's DecompressionStream). Enough for the server's own archives; no zip64, no encryption.

import { inflateRaw } from "./nifti.js";

export class ZipError extends Error {}

function endOfDirectory(view) {
  for (let i = view.byteLength - 22; i >= Math.max(0, view.byteLength - 22 - 65535); i--) {
    if (view.getUint32(i, true) === 0x06054b50) return i;
  }
  throw new ZipError("not a zip archive (no end of central directory)");
}

// {name: Uint8Array} of every member.
export async function unzip(buffer) {
  const bytes = buffer instanceof Uint8Array ? buffer : new Uint8Array(buffer);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const eocd = endOfDirectory(view);
  const count = view.getUint16(eocd + 10, true);
  let at = view.getUint32(eocd + 16, true);
  const out = {};
  const decoder = new TextDecoder();
  for (let n = 0; n < count; n++) {
    if (view.getUint32(at, true) !== 0x02014b50) throw new ZipError("corrupt zip central directory");
    const method = view.getUint16(at + 10, true);
    const compressed = view.getUint32(at + 20, true);
    const nameLen = view.getUint16(at + 28, true);
    const extraLen = view.getUint16(at + 30, true);
    const commentLen = view.getUint16(at + 32, true);
    const local = view.getUint32(at + 42, true);
    const name = decoder.decode(bytes.subarray(at + 46, at + 46 + nameLen));
    at += 46 + nameLen + extraLen + commentLen;
    if (view.getUint32(local, true) !== 0x04034b50) throw new ZipError(`corrupt zip member ${name}`);
    const start = local + 30 + view.getUint16(local + 26, true) + view.getUint16(local + 28, true);
    const body = bytes.subarray(start, start + compressed);
    if (method === 0) out[name] = body.slice();
    else if (method === 8) out[name] = await inflateRaw(body);
    else throw new ZipError(`zip member ${name} uses compression method ${method}`);
  }
  return out;
}
