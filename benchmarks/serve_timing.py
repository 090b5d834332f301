"""`pulse serve` timings: start-up to the first page, and a default run through the page
against the same run through `pulse upsample`, alternating, on the bundled model.

    python benchmarks/serve_timing.py [--repeats 2] [--screenshot docs/serve.png]

Needs Chromium (apt-get install chromium) and Playwright (the test extras). The
input is the page's built-in example (a sampled face at 8×8); both paths run
K = 4 samples of 100 steps, the page's and the paper's defaults.
"""

import argparse
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM = next(p for p in ("/usr/lib/chromium/chromium", shutil.which("chromium") or "") if p and Path(p).exists())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--screenshot", default=None)
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    t0 = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "pulse_sr", "serve", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                urllib.request.urlopen(url, timeout=1).read()
                break
            except OSError:
                time.sleep(0.05)
        t_http = time.perf_counter() - t0
        with sync_playwright() as p, tempfile.TemporaryDirectory() as tmp:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(url)
            page.wait_for_selector("#run")
            print(f"pulse serve -> first page: {time.perf_counter() - t0:.1f} s (HTTP up after {t_http:.1f} s)")
            for rep in range(args.repeats):
                page.reload()
                page.wait_for_selector("#run")
                page.check("#example input[value='sampled face (8×8)']")
                t = time.perf_counter()
                page.click("#run")
                page.wait_for_selector(".pulse-card", timeout=600_000)
                page_s = time.perf_counter() - t
                status = page.inner_text("#status")
                print(f"  repeat {rep}: page: {page_s:.1f} s click to results ({status})", flush=True)
                if rep == 0:
                    if args.screenshot:
                        page.screenshot(path=args.screenshot, full_page=True)
                    # The same input for the CLI: the example file the server made.
                    example = next(Path(tempfile.gettempdir()).glob("pulse-serve-*/examples/*_0.png"))
                    shutil.copy(example, Path(tmp) / "face8.png")
                out = Path(tmp) / f"cli{rep}"
                t = time.perf_counter()
                r = subprocess.run([sys.executable, "-m", "pulse_sr", "upsample", str(Path(tmp) / "face8.png"),
                                    "--out", str(out), "--samples", "4", "--quiet"], capture_output=True, text=True)
                cli_s = time.perf_counter() - t
                summary = r.stderr.strip().splitlines()[-1]
                m = re.match(r"(\d+)/(\d+)", summary)
                print(f"  repeat {rep}: pulse upsample: {cli_s:.1f} s wall, start-up included ({m.group(0)} within eps)",
                      flush=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
