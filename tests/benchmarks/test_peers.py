"""Peer rows: a missing nnU-Net venv is reported as such (never replaced by a stand-in); sample positions are the
same on both sides of a read comparison."""

import importlib

import pytest


def test_missing_peer_venv_says_not_installed(tmp_path, monkeypatch):
    monkeypatch.setenv("VOXRAY_PEER_VENV", str(tmp_path / "nowhere"))
    import peers

    peers = importlib.reload(peers)
    try:
        assert peers.peer_python() is None and peers.peer_version() is None
        with pytest.raises(peers.PeerError, match="peer not installed"):
            peers.NnUNetPeer(tmp_path / "w", tmp_path / "log")
    finally:
        monkeypatch.delenv("VOXRAY_PEER_VENV")
        importlib.reload(peers)


def test_positions_are_shared_and_corners_leave_the_volume_sometimes():
    from store import corner, positions

    assert positions(5, seed=1) == positions(5, seed=1)
    starts = [corner(u, (100, 120, 90), 64) for _, u in positions(200, seed=0)]
    lo = [min(s[i] for s in starts) for i in range(3)]
    hi = [max(s[i] + 64 for s in starts) for i in range(3)]
    assert all(v < 0 for v in lo) and all(h > n for h, n in zip(hi, (100, 120, 90)))
    assert all(-16 <= s[i] <= n - 48 for s in starts for i, n in enumerate((100, 120, 90)))


def test_default_is_the_smallest_layout_that_reads_as_fast_as_the_peer():
    from store import pick_default

    rows = [{"codec": "none", "read_cpu_ms": 8.0, "mbytes": 40.0}, {"codec": "lz4", "read_cpu_ms": 11.0, "mbytes": 20.0},
            {"codec": "zstd", "read_cpu_ms": 30.0, "mbytes": 15.0}]
    assert pick_default(rows, peer_read_ms=12.0)["codec"] == "lz4"
    assert pick_default(rows, peer_read_ms=9.0)["codec"] == "none"
    assert pick_default(rows, peer_read_ms=5.0)["codec"] == "none"  # none fast enough: the fastest
    assert pick_default(rows, peer_read_ms=None)["codec"] == "none"  # within 1.25× of the fastest
