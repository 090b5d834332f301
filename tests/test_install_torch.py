"""The Makefile's torch step (scripts/install_torch.py): which build on which machine, tested without network."""

import http.server
import importlib.util
import subprocess
import sys
import threading
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "install_torch.py"
spec = importlib.util.spec_from_file_location("install_torch", SCRIPT)
it = importlib.util.module_from_spec(spec)
spec.loader.exec_module(it)


def test_linux_without_a_gpu_takes_the_cpu_index_and_falls_back_when_it_is_unreachable():
    args, why = it.plan("2.13.0", system="Linux", nvidia=False, index_ok=lambda url: True)
    assert args == ["--index-url", it.CPU_INDEX, "torch==2.13.0"] and "CPU build" in why
    args, why = it.plan("2.13.0", system="Linux", nvidia=False, index_ok=lambda url: False)
    assert args == ["torch==2.13.0"] and "cannot be reached" in why


def test_a_gpu_or_another_system_takes_the_plain_wheel_and_the_build_can_be_forced():
    never = lambda url: pytest.fail("the index is not asked")  # noqa: E731
    assert it.plan("2.13.0", system="Linux", nvidia=True, index_ok=never)[0] == ["torch==2.13.0"]
    assert it.plan("2.13.0", system="Darwin", nvidia=False, index_ok=never)[0] == ["torch==2.13.0"]
    assert it.plan("2.13.0", "cuda", system="Linux", nvidia=False, index_ok=never)[0] == ["torch==2.13.0"]
    assert it.plan("2.13.0", "cpu", system="Linux", nvidia=True, index_ok=lambda u: True)[0][0] == "--index-url"
    with pytest.raises(SystemExit, match="--build must be one of"):
        it.plan("2.13.0", "rocm")


class _Index(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path.rstrip("/").endswith("/torch")
        self.send_response(200 if ok else 404)
        self.end_headers()
        self.wfile.write(b"<a href='torch-2.13.0+cpu.whl'>torch</a>" if ok else b"")

    def log_message(self, *a):
        pass


def test_the_probe_against_a_local_index_and_a_closed_port():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Index)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/whl/cpu"
        assert it.reachable(url + "/torch/")
        out = subprocess.run([sys.executable, str(SCRIPT), "--build", "cpu", "--index", url, "--dry-run"],
                             capture_output=True, text=True, check=True).stdout
        assert f"--index-url {url} torch==2.13.0" in out
    finally:
        srv.shutdown()
    closed = f"http://127.0.0.1:{srv.server_address[1]}/whl/cpu"   # nothing listens there now
    out = subprocess.run([sys.executable, str(SCRIPT), "--build", "cpu", "--index", closed, "--dry-run"],
                         capture_output=True, text=True, check=True).stdout
    assert "cannot be reached" in out and out.rstrip().endswith("install -q torch==2.13.0")
