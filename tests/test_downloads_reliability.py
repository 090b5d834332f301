"""Downloads under bad servers (127.0.0.1 only): bodies without a length, chunked
bodies, stalls, slow trickles, redirect loops, servers that keep stopping at the
same byte. Every server wait is bounded and released at teardown."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import pickle
import random
import re
import struct
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from pulse_sr.cli import main
from pulse_sr.errors import DownloadError
from pulse_sr.formats.sniff import looks_complete
from pulse_sr.hub import registry
from pulse_sr.hub.download import download, download_model
from pulse_sr.hub.registry import ModelEntry, ModelFile

from conftest import local_http_server


def safetensors_bytes(n: int = 200_000) -> bytes:
    """A valid safetensors file: one uint8 tensor of ``n`` random bytes."""
    header = json.dumps({"__metadata__": {"format": "pt"},
                         "w": {"dtype": "U8", "shape": [n], "data_offsets": [0, n]}}).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + random.Random(1).randbytes(n)


def zip_bytes() -> bytes:
    """A torch.save-like zip: a pickle and a stored (uncompressed) blob."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": 1}, protocol=2))
        z.writestr("archive/data/0", random.Random(2).randbytes(100_000))
    return buf.getvalue()


MODEL = safetensors_bytes()
MODEL_SHA = hashlib.sha256(MODEL).hexdigest()
NOISE = random.Random(3).randbytes(150_000)   # No recognisable format.
FULL = 300_000
STALL_S = 0.5                                   # Client-side stall timeout in the stall tests.


class Handler(http.server.BaseHTTPRequestHandler):
    """One fault per path, tuned by ``server.cfg``:

    /close   body without Content-Length, ended by closing (cut at cfg["cut"]);
    /chunked chunked body, cut (no terminator) at cfg["cut"], body cfg["body"];
    /stall   Content-Length given, cfg["first"] bytes, then silence;
    /drip    Content-Length given, one byte every 20 ms for 5 s;
    /loop    redirects to itself;
    /short   Content-Length FULL, ignores Range, always stops at cfg["stop_at"];
    /grow    honours Range, sends at most cfg["step"] bytes per request.
    """

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        cfg = self.server.cfg
        cfg["requests"].append((self.path, self.headers.get("Range")))
        try:
            getattr(self, "serve_" + self.path.strip("/"), self.serve_not_found)(cfg)
        except (BrokenPipeError, ConnectionResetError):
            pass  # The client gave up, which is what most tests want.

    def _start(self, status=200, length=None, extra=()):
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        if length is not None:
            self.send_header("Content-Length", str(length))
        for k, v in extra:
            self.send_header(k, v)
        self.send_header("Connection", "close")
        self.end_headers()

    def serve_not_found(self, cfg):
        self._start(404, 0)

    def serve_close(self, cfg):
        body = cfg["body"]
        if self.headers.get("Range"):
            # Past the end: some servers answer 416 without saying the full length.
            return self._start(416, 0)
        self._start()
        self.wfile.write(body if cfg["cut"] is None else body[:cfg["cut"]])

    def serve_chunked(self, cfg):
        body = cfg["body"]
        self._start(extra=[("Transfer-Encoding", "chunked")])
        end = len(body) if cfg["cut"] is None else cfg["cut"]
        for i in range(0, end, 32_768):
            piece = body[i:min(i + 32_768, end)]
            self.wfile.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
        if cfg["cut"] is None:
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def serve_stall(self, cfg):
        self._start(length=len(MODEL))
        self.wfile.write(MODEL[:cfg["first"]])
        self.wfile.flush()
        cfg["release"].wait(10)

    def serve_drip(self, cfg):
        self._start(length=len(MODEL))
        for i in range(250):  # 5 s at most, then hang up: a broken client fails instead of hanging.
            self.wfile.write(MODEL[i:i + 1])
            self.wfile.flush()
            if cfg["release"].wait(0.02):
                return

    def serve_loop(self, cfg):
        self._start(302, 0, [("Location", "/loop")])

    def serve_short(self, cfg):
        self._start(length=FULL)
        self.wfile.write(NOISE[:cfg["stop_at"]])

    def serve_grow(self, cfg):
        data = NOISE
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        start = int(m.group(1)) if m else 0
        if m:
            self._start(206, len(data) - start,
                        [("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")])
        else:
            self._start(length=len(data))
        self.wfile.write(data[start:start + cfg["step"]])


@pytest.fixture(scope="module")
def _server():
    with local_http_server(Handler) as server:
        yield server


@pytest.fixture
def server(_server):
    _server.cfg = {"body": MODEL, "cut": None, "first": 50_000, "stop_at": 100_000, "step": 60_000,
                   "release": threading.Event(), "requests": []}
    _server.url = f"http://127.0.0.1:{_server.server_address[1]}"
    yield _server
    _server.cfg["release"].set()  # Wake any handler still waiting on a client that left.


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PULSE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg
    return msg


# ---------------------------------------------------------------------------
# looks_complete


@pytest.mark.parametrize("make", [safetensors_bytes, zip_bytes, lambda: pickle.dumps(list(range(999)), 2)],
                         ids=["safetensors", "zip", "pickle"])
def test_looks_complete_tells_whole_from_cut(tmp_path, make):
    data = make()
    path = tmp_path / "f"
    path.write_bytes(data)
    assert looks_complete(path)
    for cut in (len(data) - 1, len(data) - 10, len(data) // 2):
        assert data[cut - 1:cut] != b"."  # So the pickle case really is cut mid-stream.
        path.write_bytes(data[:cut])
        assert not looks_complete(path), cut


def test_looks_complete_rejects_other_files(tmp_path):
    path = tmp_path / "f"
    for data in (b"", NOISE, safetensors_bytes() + b"extra", b"\x80"):
        path.write_bytes(data)
        assert not looks_complete(path)
    assert not looks_complete(tmp_path / "absent")


def test_looks_complete_accepts_the_bundled_model():
    entry = registry.get_entry("default")
    assert looks_complete(registry.local_path(entry, entry.files[0].filename))


# ---------------------------------------------------------------------------
# 1. Bodies without a length


@pytest.mark.parametrize("cut", [100_000, None], ids=["cut", "whole"])
def test_close_delimited_body_without_size_is_refused(server, tmp_path, cut):
    server.cfg["cut"] = cut
    dest = tmp_path / "m.safetensors"
    with pytest.raises(DownloadError) as info:
        download(server.url + "/close", dest, timeout=5)
    msg = one_line(info)
    assert msg.startswith("127.0.0.1:") and "did not say how long m.safetensors is" in msg
    assert "registry has no size or sha256" in msg and "cut-off transfer cannot be told" in msg
    assert not dest.exists()
    # The .part is kept, so a later run that knows the size can use it.
    assert (tmp_path / "m.safetensors.part").stat().st_size == (cut or len(MODEL))


def test_kept_part_is_finalised_once_the_size_is_known(server, tmp_path):
    dest = tmp_path / "m.safetensors"
    with pytest.raises(DownloadError, match="did not say how long"):
        download(server.url + "/close", dest, timeout=5)
    n = len(server.cfg["requests"])
    download(server.url + "/close", dest, sha256=MODEL_SHA, size=len(MODEL), timeout=5)
    assert dest.read_bytes() == MODEL
    assert len(server.cfg["requests"]) == n  # Already complete: no request.


def test_416_without_a_length_does_not_finalise_an_unmeasured_part(server, tmp_path):
    dest = tmp_path / "m.safetensors"
    (tmp_path / "m.safetensors.part").write_bytes(MODEL[:1000])
    with pytest.raises(DownloadError, match="did not say how long"):
        download(server.url + "/close", dest, timeout=5)
    assert server.cfg["requests"][-1][1] == "bytes=1000-"
    assert not dest.exists() and (tmp_path / "m.safetensors.part").stat().st_size == 1000


def test_close_delimited_body_with_known_size_reports_the_cut(server, tmp_path):
    server.cfg["cut"] = 100_000
    with pytest.raises(DownloadError) as info:
        download(server.url + "/close", tmp_path / "m.safetensors", size=len(MODEL), timeout=5)
    assert f"stopped after 100000 of {len(MODEL)} bytes (connection closed)" in one_line(info)


def test_cut_download_is_not_listed_as_downloaded(server, cache, monkeypatch):
    server.cfg["cut"] = 100_000
    e = ModelEntry(name="no-size", description="d", kind="tf-pickle",
                   files=[ModelFile("m.safetensors", server.url + "/close", None, None)])
    monkeypatch.setitem(registry.REGISTRY, e.name, e)
    runner = CliRunner()
    res = runner.invoke(main, ["models", "download", "no-size", "-q"])
    assert res.exit_code == 1
    assert len(res.output.strip().splitlines()) == 1 and "did not say how long" in res.output
    assert not (cache / "no-size" / "m.safetensors").exists()
    res = runner.invoke(main, ["models", "list"])
    line = next(ln for ln in res.output.splitlines() if ln.startswith("no-size"))
    assert " partial " in line and "downloaded" not in line
    res = runner.invoke(main, ["models", "verify", "no-size"])
    assert res.exit_code == 1 and "m.safetensors: missing (a partial download is there)" in res.output


def test_chunked_body_that_looks_complete_is_accepted(server, tmp_path):
    dest = download(server.url + "/chunked", tmp_path / "m.safetensors", timeout=5)
    assert dest.read_bytes() == MODEL


@pytest.mark.parametrize("cut", [65_536, 70_000], ids=["between-chunks", "mid-chunk"])
def test_chunked_body_without_terminator_is_refused(server, tmp_path, cut):
    server.cfg["cut"] = cut
    dest = tmp_path / "m.safetensors"
    with pytest.raises(DownloadError) as info:
        download(server.url + "/chunked", dest, timeout=5)
    assert "stopped after" in one_line(info) and "connection closed" in str(info.value)
    assert not dest.exists()


def test_chunked_body_of_unknown_format_is_refused(server, tmp_path):
    server.cfg["body"] = NOISE
    dest = tmp_path / "m.bin"
    with pytest.raises(DownloadError) as info:
        download(server.url + "/chunked", dest, timeout=5)
    assert "in chunks with no total length and it does not look complete" in one_line(info)
    assert not dest.exists() and (tmp_path / "m.bin.part").stat().st_size == len(NOISE)


# ---------------------------------------------------------------------------
# 4. Stall timeout and deadline


def test_stall_stops_the_transfer_and_keeps_the_part(server, tmp_path):
    dest = tmp_path / "m.safetensors"
    t0 = time.monotonic()
    with pytest.raises(DownloadError) as info:
        download(server.url + "/stall", dest, timeout=STALL_S)
    assert time.monotonic() - t0 < 3
    msg = one_line(info)
    assert f"stopped after 50000 of {len(MODEL)} bytes (no data for 0.5 s)" in msg and "resume" in msg
    assert (tmp_path / "m.safetensors.part").stat().st_size == 50_000 and not dest.exists()


def test_deadline_stops_a_slow_trickle(server, tmp_path):
    dest = tmp_path / "m.safetensors"
    t0 = time.monotonic()
    with pytest.raises(DownloadError) as info:
        download(server.url + "/drip", dest, timeout=5, deadline=0.5)
    assert time.monotonic() - t0 < 2.5  # The stall timeout (5 s) never fires on a trickle.
    assert "(passed the 0.5 s deadline)" in one_line(info)
    assert 0 < (tmp_path / "m.safetensors.part").stat().st_size < len(MODEL)


def test_deadline_cuts_a_stall_short(server, tmp_path):
    t0 = time.monotonic()
    with pytest.raises(DownloadError) as info:
        download(server.url + "/stall", tmp_path / "m.safetensors", timeout=5, deadline=0.5)
    assert time.monotonic() - t0 < 2.5  # Not the 5 s stall timeout.
    assert "stopped after 50000" in one_line(info) and "(passed the 0.5 s deadline)" in str(info.value)


def test_cli_deadline(server, cache, monkeypatch):
    e = ModelEntry(name="slow", description="d", kind="tf-pickle",
                   files=[ModelFile("m.safetensors", server.url + "/drip", MODEL_SHA, len(MODEL))])
    monkeypatch.setitem(registry.REGISTRY, e.name, e)
    t0 = time.monotonic()
    res = CliRunner().invoke(main, ["models", "download", "slow", "-q", "--deadline", "0.5"])
    assert time.monotonic() - t0 < 2.5
    assert res.exit_code == 1
    assert len(res.output.strip().splitlines()) == 1 and "passed the 0.5 s deadline" in res.output


def test_deadline_spans_mirrors(server, cache):
    e = ModelEntry(name="slow-mirrored", description="d", kind="tf-pickle",
                   files=[ModelFile("m.safetensors", server.url + "/drip", MODEL_SHA, len(MODEL))],
                   mirrors={"m.safetensors": (server.url + "/close",)})
    reg = {e.name: e}
    with pytest.raises(DownloadError, match="passed the 0.5 s deadline"):
        download_model("slow-mirrored", timeout=5, deadline=0.5, registry=reg)
    assert [p for p, _ in server.cfg["requests"]] == ["/drip"]  # Out of time: no mirror tried.


# ---------------------------------------------------------------------------
# 5. Redirect loop


def test_redirect_loop_is_one_line(server, tmp_path):
    with pytest.raises(DownloadError) as info:
        download(server.url + "/loop", tmp_path / "f.bin", timeout=5)
    msg = one_line(info)
    assert msg.startswith(f"127.0.0.1:{server.server_address[1]} redirected too many times for f.bin;")
    assert not (tmp_path / "f.bin").exists()


# ---------------------------------------------------------------------------
# 6. No progress between runs


def test_server_stopping_at_the_same_byte_is_not_resumed_forever(server, tmp_path):
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match=f"stopped after 100000 of {FULL} bytes.*again to resume"):
        download(server.url + "/short", dest, timeout=5)
    with pytest.raises(DownloadError) as info:
        download(server.url + "/short", dest, timeout=5)
    msg = one_line(info)
    assert server.cfg["requests"][-1][1] == "bytes=100000-"  # Asked to resume; the server ignored it.
    assert f"keeps stopping at 100000 of {FULL} bytes of f.bin" in msg
    assert "again to resume" not in msg and "mirror" in msg and "later" in msg
    assert (tmp_path / "f.bin.part").stat().st_size == 100_000


def test_server_that_sends_more_each_time_still_completes(server, tmp_path):
    dest = tmp_path / "f.bin"
    sha = hashlib.sha256(NOISE).hexdigest()
    for run in range(10):
        try:
            download(server.url + "/grow", dest, sha256=sha, timeout=5)
            break
        except DownloadError as exc:
            assert "again to resume" in str(exc)
    assert dest.read_bytes() == NOISE and run == 2  # 60000 bytes a run: three runs.


# ---------------------------------------------------------------------------


def test_library_imports_neither_click_nor_tqdm_nor_torch():
    code = ("import sys, pulse_sr.hub.download, pulse_sr.formats.sniff; "
            "print(sorted(m for m in ('click', 'tqdm', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False,
                         cwd=Path(__file__).parent)
    assert out.stdout.strip() == "[]", out.stderr
