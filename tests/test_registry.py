"""Registry, downloader and `pulse models` against a local HTTP server (127.0.0.1 only)."""

from __future__ import annotations

import hashlib
import http.server
import random
import re
import socket
import struct

import pytest
from click.testing import CliRunner

from pulse_sr.hub import registry
from pulse_sr.cli import main
from pulse_sr.hub.download import FileCheck, download, download_model, sha256_file, verify_model
from pulse_sr.errors import DownloadError
from pulse_sr.hub.registry import ModelEntry, ModelFile, UnknownModelError, resolve_model

PAYLOAD = random.Random(0).randbytes(300_000)
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
TIMEOUT = 5

from conftest import local_http_server


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD at /file.bin, with Range support and fault switches on
    ``server.cfg``: cut_after (bytes sent before hanging up), corrupt, ignore_range.
    /uc?export=download&id=... mimics Google Drive's confirmation page."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        cfg = self.server.cfg
        cfg["requests"].append((self.path, dict(self.headers)))
        if self.path.startswith("/uc?") and "confirm=" not in self.path:
            page = (b'<html><body><form id="download-form" action="/uc" method="get">'
                    b'<input type="hidden" name="id" value="abc">'
                    b'<input type="hidden" name="export" value="download">'
                    b'<input type="hidden" name="confirm" value="t">'
                    b'<input type="submit" value="Download anyway"></form></body></html>')
            return self._send(200, page, {"Content-Type": "text/html; charset=utf-8"})
        if not (self.path == "/file.bin" or self.path.startswith("/uc?")):
            return self._send(404, b"not found", {"Content-Type": "text/plain"})
        data = bytearray(PAYLOAD)
        if cfg["corrupt"]:
            data[1000] ^= 0xFF
        start, status, headers = 0, 200, {"Content-Type": "application/octet-stream"}
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if m and not cfg["ignore_range"]:
            start = int(m.group(1))
            if start >= len(data):
                return self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = bytes(data[start:])
        cut = cfg["cut_after"]
        self._send(status, body if cut is None else body[:cut], headers, length=len(body))

    def _send(self, status, body, headers, length=None):
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()


@pytest.fixture(scope="module")
def _server():
    with local_http_server(Handler) as server:
        yield server


@pytest.fixture
def server(_server):
    _server.cfg = {"cut_after": None, "corrupt": False, "ignore_range": False, "requests": []}
    _server.url = f"http://127.0.0.1:{_server.server_address[1]}"
    return _server


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PULSE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def entry(server, monkeypatch):
    e = ModelEntry(name="tiny-test", description="test weights", kind="tf-pickle",
                   files=[ModelFile("tiny.bin", server.url + "/file.bin", PAYLOAD_SHA, len(PAYLOAD))],
                   resolution=32, licence="test-licence")
    monkeypatch.setitem(registry.REGISTRY, e.name, e)
    return e


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_full_download_checks_size_and_hash(server, tmp_path):
    seen = []
    dest = download(server.url + "/file.bin", tmp_path / "f.bin", sha256=PAYLOAD_SHA,
                    size=len(PAYLOAD), timeout=TIMEOUT, progress=lambda *a: seen.append(a))
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "f.bin.part").exists()
    # Progress is a callback (the CLI draws the bar): bytes on disk grow to the total.
    assert seen and all(name == "f.bin" and total == len(PAYLOAD) for name, _, total in seen)
    done = [d for _, d, _ in seen]
    assert done == sorted(done) and done[-1] == len(PAYLOAD)


def test_interrupted_download_resumes_with_range(server, tmp_path):
    dest = tmp_path / "f.bin"
    server.cfg["cut_after"] = 100_000
    with pytest.raises(DownloadError, match="stopped after 100000 of 300000 bytes.*again to resume"):
        download(server.url + "/file.bin", dest, sha256=PAYLOAD_SHA, timeout=TIMEOUT)
    assert not dest.exists()
    assert (tmp_path / "f.bin.part").stat().st_size == 100_000

    server.cfg["cut_after"] = None
    download(server.url + "/file.bin", dest, sha256=PAYLOAD_SHA, size=len(PAYLOAD),
             timeout=TIMEOUT)
    assert dest.read_bytes() == PAYLOAD
    assert server.cfg["requests"][-1][1].get("Range") == "bytes=100000-"


def test_corrupt_download_is_deleted(server, tmp_path):
    server.cfg["corrupt"] = True
    with pytest.raises(DownloadError, match=f"sha256 expected {PAYLOAD_SHA}, got [0-9a-f]{{64}}"):
        download(server.url + "/file.bin", tmp_path / "f.bin", sha256=PAYLOAD_SHA,
                 timeout=TIMEOUT)
    assert list(tmp_path.iterdir()) == []


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    server.cfg["ignore_range"] = True
    (tmp_path / "f.bin.part").write_bytes(b"garbage that must not survive")
    download(server.url + "/file.bin", tmp_path / "f.bin", sha256=PAYLOAD_SHA,
             timeout=TIMEOUT)
    assert server.cfg["requests"][-1][1].get("Range") == "bytes=29-"
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD


def test_drive_style_confirmation_page_is_followed(server, tmp_path):
    dest = download(server.url + "/uc?export=download&id=abc", tmp_path / "f.bin",
                    sha256=PAYLOAD_SHA, timeout=TIMEOUT)
    assert dest.read_bytes() == PAYLOAD
    assert "confirm=t" in server.cfg["requests"][-1][0]


def test_offline_gives_one_line_advice(tmp_path):
    port = closed_port()
    with pytest.raises(DownloadError) as info:
        download(f"http://127.0.0.1:{port}/x.bin", tmp_path / "x.bin", timeout=TIMEOUT)
    msg = str(info.value)
    assert msg.startswith(f"could not reach 127.0.0.1:{port}")
    assert "check your connection" in msg and str(tmp_path / "x.bin") in msg and "\n" not in msg


def test_http_error_is_download_error(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(server.url + "/nope", tmp_path / "x.bin", timeout=TIMEOUT)


def test_cache_dir_follows_env(cache, entry):
    assert registry.cache_dir() == cache
    assert registry.local_path(entry, "tiny.bin") == cache / "tiny-test" / "tiny.bin"


def test_resolve_model(cache, entry, tmp_path):
    with pytest.raises(DownloadError, match="pulse models download tiny-test"):
        resolve_model("tiny-test")
    paths = download_model("tiny-test", timeout=TIMEOUT)
    assert paths == [cache / "tiny-test" / "tiny.bin"]
    info = resolve_model("tiny-test")
    assert info.path == paths[0] and info.kind == "tf-pickle" and info.resolution == 32

    other = tmp_path / "my.pkl"
    other.write_bytes(b"x")
    assert resolve_model(str(other)).path == other
    with pytest.raises(UnknownModelError, match="known models: .*stylegan-ffhq-1024.*tiny-test"):
        resolve_model(str(tmp_path / "missing.pkl"))


def test_resolve_pulse_roles(cache, tmp_path):
    folder = cache / "pulse-ffhq-1024"
    folder.mkdir(parents=True)
    for name, n in (("synthesis.pt", 10), ("mapping.pt", 10), ("gaussian_fit.pt", 4566)):
        (folder / name).write_bytes(b"\0" * n)
    info = resolve_model("pulse-ffhq-1024")
    assert info.main == folder / "synthesis.pt"
    assert info.mapping == folder / "mapping.pt"
    assert info.gaussian_fit == folder / "gaussian_fit.pt"
    assert registry.model_status(registry.get_entry("pulse-ffhq-1024")) == "downloaded"

    (folder / "gaussian_fit.pt").write_bytes(b"short")  # wrong size: not usable
    with pytest.raises(DownloadError, match="gaussian_fit.pt missing or incomplete"):
        resolve_model("pulse-ffhq-1024")
    assert resolve_model(str(folder)).mapping == folder / "mapping.pt"


def test_download_model_skips_verified_and_uses_mirror(cache, server, monkeypatch):
    port = closed_port()
    e = ModelEntry(name="mirrored", description="d", kind="gaussian-fit",
                   files=[("fit.pt", f"http://127.0.0.1:{port}/fit.pt", PAYLOAD_SHA, None)],
                   mirrors={"fit.pt": (server.url + "/file.bin",)})
    reg = {}
    registry.register(e, registry=reg)
    download_model("mirrored", timeout=TIMEOUT, registry=reg)
    n = len(server.cfg["requests"])
    download_model("mirrored", timeout=TIMEOUT, registry=reg)
    assert len(server.cfg["requests"]) == n  # present and verified: no request


def test_builtin_entries_are_well_formed():
    for name in ("default", "stylegan-ffhq-1024", "stylegan-celebahq-1024", "pulse-ffhq-1024"):
        e = registry.get_entry(name)
        assert e.licence
        for f in e.files:
            for url in e.urls(f.filename):
                assert url.startswith("https://")
    assert registry.get_entry("default").bundled and registry.get_entry("default").kind == "pulse-sr"
    assert registry.get_entry("default").files[0].filename == "default.safetensors"


def test_cli_list_and_download(cache, entry):
    runner = CliRunner()
    res = runner.invoke(main, ["models", "list"])
    assert res.exit_code == 0, res.output
    line = next(ln for ln in res.output.splitlines() if ln.startswith("tiny-test"))
    assert "not downloaded" in line and "test-licence" in line
    assert re.search(r"^default\s+bundled\s+\S+\s+bundled", res.output, re.M)

    res = runner.invoke(main, ["models", "download", "tiny-test", "--quiet"])
    assert res.exit_code == 0, res.output
    assert (cache / "tiny-test" / "tiny.bin").read_bytes() == PAYLOAD

    res = runner.invoke(main, ["models", "list"])
    line = next(ln for ln in res.output.splitlines() if ln.startswith("tiny-test"))
    assert " downloaded " in line

    res = runner.invoke(main, ["models", "download", "tiny-test", "--force", "--quiet"])
    assert res.exit_code == 0, res.output


def test_cli_errors_have_exit_codes(cache, monkeypatch):
    runner = CliRunner()
    res = runner.invoke(main, ["models", "download", "no-such-model"])
    assert res.exit_code == 2
    assert "unknown model 'no-such-model'" in res.output and "stylegan-ffhq-1024" in res.output

    e = ModelEntry(name="offline", description="d", kind="tf-pickle",
                   files=[("x.pkl", f"http://127.0.0.1:{closed_port()}/x.pkl", None, None)])
    monkeypatch.setitem(registry.REGISTRY, e.name, e)
    res = runner.invoke(main, ["models", "download", "offline", "-q"])
    assert res.exit_code == 1
    assert len(res.output.strip().splitlines()) == 1 and "could not reach 127.0.0.1" in res.output


def test_bundled_model_matches_its_recorded_size_and_sha256():
    e = registry.get_entry("default")
    f = e.files[0]
    path = registry.local_path(e, f.filename)
    assert f.sha256 and f.size
    assert path.stat().st_size == f.size
    assert sha256_file(path) == f.sha256
    assert registry.model_status(e) == "bundled"
    assert resolve_model("default").path == path
    assert verify_model("default") == [FileCheck("default.safetensors", "ok", "ok")]


def test_bundled_model_that_differs_from_its_record_still_resolves():
    real = registry.get_entry("default")
    e = ModelEntry(name="default", description="d", kind="bundled",
                   files=[ModelFile("default.safetensors", None, "0" * 64, 123)], licence="l")
    reg = {"default": e}
    path = registry.local_path(real, "default.safetensors")
    assert registry.model_status(e) == "bundled (modified)"
    # Installed with the package, not downloaded: a rebuilt model still loads.
    assert resolve_model("default", registry=reg).path == path
    [check] = verify_model("default", registry=reg)
    assert check.status == "size-mismatch" and not check.ok
    assert check.message == f"size mismatch: expected 123, got {path.stat().st_size}"


def _safetensors(n: int) -> bytes:
    header = b'{"w":{"dtype":"U8","shape":[%d],"data_offsets":[0,%d]}}' % (n, n)
    return struct.pack("<Q", len(header)) + header + bytes(n)


@pytest.fixture
def checked(cache, monkeypatch):
    """A model with one file per verify outcome, on disk in the cache."""
    files = {
        "good.bin": (PAYLOAD, PAYLOAD_SHA, len(PAYLOAD)),
        "missing.bin": (None, PAYLOAD_SHA, len(PAYLOAD)),
        "short.bin": (PAYLOAD[:10], PAYLOAD_SHA, len(PAYLOAD)),
        "flipped.bin": (PAYLOAD[:-1] + b"\0", PAYLOAD_SHA, len(PAYLOAD)),
        "sized.bin": (PAYLOAD, None, len(PAYLOAD)),
        "whole.safetensors": (_safetensors(100), None, None),
        "cut.safetensors": (_safetensors(100)[:-1], None, None),
    }
    e = ModelEntry(name="checked", description="d", kind="tf-pickle",
                   files=[ModelFile(n, "https://example.invalid/" + n, sha, size)
                          for n, (_, sha, size) in files.items()])
    monkeypatch.setitem(registry.REGISTRY, e.name, e)
    (cache / "checked").mkdir(parents=True)
    for name, (data, _, _) in files.items():
        if data is not None:
            (cache / "checked" / name).write_bytes(data)
    return e


def test_verify_model_reports_each_file(checked):
    got = {c.filename: (c.status, c.message, c.ok) for c in verify_model("checked")}
    assert got == {
        "good.bin": ("ok", "ok", True),
        "missing.bin": ("missing", "missing", False),
        "short.bin": ("size-mismatch", f"size mismatch: expected {len(PAYLOAD)}, got 10", False),
        "flipped.bin": ("sha256-mismatch", "sha256 mismatch", False),
        "sized.bin": ("ok", "ok (size only; no published sha256)", True),
        "whole.safetensors": ("unverifiable-complete",
                              "unverifiable: no published size or sha256; looks complete", True),
        "cut.safetensors": ("unverifiable-incomplete",
                            "unverifiable: no published size or sha256; looks incomplete", False),
    }
    with pytest.raises(UnknownModelError):
        verify_model("no-such-model")


def test_cli_verify_exit_codes(checked, monkeypatch):
    runner = CliRunner()
    res = runner.invoke(main, ["models", "verify", "default"])
    assert res.exit_code == 0 and res.output == "default.safetensors: ok\n"

    res = runner.invoke(main, ["models", "verify", "checked"])
    assert res.exit_code == 1
    assert "flipped.bin: sha256 mismatch" in res.output and "missing.bin: missing" in res.output
    assert "4 of 7 files of checked failed verification; run `pulse models download checked --force`" \
        in res.output

    e = ModelEntry(name="unpublished", description="d", kind="tf-pickle",
                   files=[ModelFile("whole.safetensors", "https://example.invalid/w", None, None)])
    monkeypatch.setitem(registry.REGISTRY, e.name, e)
    (registry.cache_dir() / "unpublished").mkdir()
    (registry.cache_dir() / "unpublished" / "whole.safetensors").write_bytes(_safetensors(100))
    res = runner.invoke(main, ["models", "verify", "unpublished"])
    assert res.exit_code == 0
    assert "whole.safetensors: unverifiable: no published size or sha256; looks complete" in res.output
    assert "only checked to look complete" in res.output

    res = runner.invoke(main, ["models", "verify", "no-such-model"])
    assert res.exit_code == 2 and "unknown model 'no-such-model'" in res.output
