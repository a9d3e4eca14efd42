"""Hostile NIfTI uploads: every one is a 4xx with a reason, and inflating one costs a bounded amount of memory.

Each bomb is a small gzip stream (~130 KB) whose body inflates to 128 MiB of zeros behind a header that declares
a tiny image; the bounded inflater must stop near the declared size. Peak allocation is measured with tracemalloc
in this process, and peak RSS growth in a fresh subprocess (the only place ru_maxrss growth means anything).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import tracemalloc

import nibabel as nib
import numpy as np
import pytest

from voxray.serving.validation import Limits, UploadError, decode_nifti, inflate_bounded

from conftest import gzip_bomb, nifti_header

LIMITS = Limits(max_upload_bytes=2**20, max_voxels=40**3, max_dim=64)
BOUND_MIB = 64


BOMBS = {
    # the classic: a 4³ image followed by 128 MiB of zeros
    "standard": (lambda: gzip_bomb(nifti_header((4, 4, 4))), 413, "inflates beyond"),
    # vox_offset + image bytes == 544 == the header read: zlib max_length 0 used to mean "no limit"
    "need_equals_544": (lambda: gzip_bomb(nifti_header((4, 4, 3))), 413, "inflates beyond"),
    # 1×1×1 uint8 needs 353 bytes, fewer than the header read (zlib raised ValueError → HTTP 500)
    "need_below_header": (lambda: gzip_bomb(nifti_header((1, 1, 1), np.uint8)), 413, "inflates beyond"),
    # a 1×1×1 image whose data would start 1e9 bytes in: the padding is the bomb
    "huge_vox_offset": (lambda: gzip_bomb(nifti_header((1, 1, 1), offset=1e9)), 400, "vox_offset"),
    # a header at the voxel limit with the bomb behind it
    "largest_declared": (lambda: gzip_bomb(nifti_header((40, 40, 40))), 413, "inflates beyond"),
}


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    return {name: make() for name, (make, _, _) in BOMBS.items()}


def traced_peak(fn) -> tuple[int, Exception | None]:
    """Peak bytes allocated while `fn` runs (tracemalloc sees zlib's buffers and the bytes it returns)."""
    tracemalloc.start()
    err = None
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - the caller checks the type
        err = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, err


@pytest.mark.parametrize("name", list(BOMBS))
def test_bomb_refused_with_bounded_memory(bombs, name):
    _, status, reason = BOMBS[name]
    data = bombs[name]
    assert len(data) < 200_000
    peak, err = traced_peak(lambda: decode_nifti(data, LIMITS, "flair"))
    assert isinstance(err, UploadError), f"{name}: expected an UploadError, got {err!r}"
    assert err.status == status and reason in str(err), str(err)
    assert peak < BOUND_MIB * 2**20, f"{name}: {peak / 2**20:.1f} MiB allocated while refusing it"


def test_bomb_rss_growth_bounded_in_a_fresh_process(bombs):
    """Peak RSS growth of a fresh interpreter that validates every bomb (the issue measured 438 MiB before)."""
    script = textwrap.dedent(f"""
        import json, resource, sys
        from voxray.serving.validation import Limits, UploadError, decode_nifti
        limits = Limits(max_upload_bytes=2**20, max_voxels=40**3, max_dim=64)
        bombs = {{k: bytes.fromhex(v) for k, v in json.loads(sys.stdin.read()).items()}}
        decode_nifti(bombs.pop("warmup"), limits, "warmup")  # import nibabel's decode path first
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out = {{}}
        for name, data in bombs.items():
            try:
                decode_nifti(data, limits, name)
                out[name] = "accepted"
            except UploadError as exc:
                out[name] = exc.status
        out["growth_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
        print(json.dumps(out))
    """)
    ok = nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)).to_bytes()
    payload = {"warmup": ok.hex(), **{k: v.hex() for k, v in bombs.items()}}
    proc = subprocess.run([sys.executable, "-c", script], input=json.dumps(payload), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    growth_mib = result.pop("growth_kib") / 1024
    print(f"peak RSS growth while refusing {len(result)} bombs: {growth_mib:.1f} MiB")
    assert result == {name: status for name, (_, status, _) in BOMBS.items()}
    assert growth_mib < BOUND_MIB


def test_need_below_header_length_decodes_when_honest():
    """The 1×1×1 case without a bomb is a valid (tiny) image, not a server error."""
    raw = nifti_header((1, 1, 1), np.uint8) + b"\x07"
    for data in (raw, gzip_bomb(raw, zeros_mib=0)):
        assert float(np.asarray(decode_nifti(data, LIMITS, "t1").dataobj).ravel()[0]) == 7.0


@pytest.mark.parametrize("gz", [True, False])
def test_declared_shape_far_larger_than_body(gz):
    raw = nifti_header((40, 40, 40)) + b"\x01" * 100
    data = gzip_bomb(raw, zeros_mib=0) if gz else raw
    peak, err = traced_peak(lambda: decode_nifti(data, LIMITS, "t1"))
    assert isinstance(err, UploadError) and err.status == 400 and "truncated" in str(err), err
    assert peak < 2**20


def test_gzip_without_trailer_refused():
    data = gzip_bomb(nifti_header((4, 4, 4)) + bytes(256), zeros_mib=0)
    with pytest.raises(UploadError, match="truncated gzip") as err:
        inflate_bounded(data[:-8], LIMITS, "t1")
    assert err.value.status == 400


@pytest.mark.parametrize("offset", [0.0, float("nan"), float("inf"), -5.0])
def test_vox_offset_inside_header_or_not_finite(offset):
    raw = nifti_header((4, 4, 4), offset=offset) + bytes(256)
    with pytest.raises(UploadError, match="vox_offset") as err:
        decode_nifti(raw, LIMITS, "t1")
    assert err.value.status == 400


def test_hdr_img_pair_header_refused():
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((4, 4, 4))
    block = bytearray(hdr.binaryblock)
    block[344:348] = b"ni1\0"
    with pytest.raises(UploadError, match="pair") as err:
        decode_nifti(bytes(block) + bytes(4 + 256), LIMITS, "t1")
    assert err.value.status == 400
