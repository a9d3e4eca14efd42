"""Memory admission for one replica: each request reserves its estimated peak memory before the body is read and
before anything is decoded, and is refused — 503 with Retry-After when the replica is busy, 413 when it alone would
exceed the budget — instead of letting `max_ongoing_requests` large uploads run the replica out of memory.

Two reservations per request: the upload (Content-Length, or the upload limit for a chunked body) before reading,
then the decode estimate from the NIfTI headers (inflating only the headers) before decoding.
"""

from __future__ import annotations

import math
import threading
from typing import Mapping

from voxray.serving.validation import Limits, UploadError, peek_header

RETRY_AFTER_S = 2
_MIB = 2**20


class MemoryBudget:
    """Bytes reserved by a replica's in-flight requests, never above `capacity`."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self.peak = 0
        self._lock = threading.Lock()

    def hold(self) -> "Reservation":
        return Reservation(self)

    def _take(self, extra: int, total: int, what: str) -> None:
        """Add `extra` bytes to a request that will then hold `total`; 413 if `total` alone is over the budget."""
        if total > self.capacity:
            raise UploadError(413, f"{what} needs about {total / _MIB:.0f} MiB, more than this server's in-flight "
                                   f"memory budget of {self.capacity / _MIB:.0f} MiB (serve.limits.max_inflight_mb); "
                                   "send a smaller or lower-resolution volume")
        with self._lock:
            if self.used + extra > self.capacity:
                raise UploadError(503, f"server busy: {what} needs about {total / _MIB:.0f} MiB and "
                                       f"{(self.capacity - self.used) / _MIB:.0f} of {self.capacity / _MIB:.0f} MiB "
                                       f"are free; retry in {RETRY_AFTER_S} s")
            self.used += extra
            self.peak = max(self.peak, self.used)

    def _give(self, n: int) -> None:
        with self._lock:
            self.used -= n


class Reservation:
    """One request's share of the budget; `resize` to the latest estimate, `release` when the response is built."""

    def __init__(self, budget: MemoryBudget) -> None:
        self.budget = budget
        self.held = 0

    def resize(self, n: int, what: str = "this request") -> None:
        """Hold `n` bytes in all (UploadError 503/413 when more than is free); shrinking always succeeds."""
        if n > self.held:
            self.budget._take(n - self.held, n, what)
        elif n < self.held:
            self.budget._give(self.held - n)
        self.held = n

    def release(self) -> None:
        self.resize(0)


def upload_bytes(content_length: str | None, limits: Limits) -> int:
    """Bytes to reserve before reading a body: its declared size, or the upload limit when it is chunked."""
    try:
        return max(0, int(content_length)) if content_length is not None else limits.max_upload_bytes
    except ValueError:
        raise UploadError(400, f"bad Content-Length {content_length!r}") from None


def decode_cost(files: Mapping[str, bytes], limits: Limits, out_channels: int) -> int:
    """Estimated peak bytes of decoding and segmenting `files`, from their headers alone: the uploads, each inflated
    NIfTI and its native-dtype array, three float32 copies of the volume (decoded, stacked, preprocessed) and the
    float32 logits of one channel group per output class."""
    total = 0
    spatial = 0
    for name, data in files.items():
        info = peek_header(data, limits, name)
        total += len(data) + info.offset + 2 * info.data_bytes + 3 * 4 * info.voxels
        spatial = max(spatial, math.prod(info.shape[:3]))
    return total + 4 * spatial * max(1, out_channels)
