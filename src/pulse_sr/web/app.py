"""``pulse serve``: the whole tool in a browser tab, on this machine, offline.

A Gradio page (what face-restoration demos use) around the same pipeline as
``pulse upsample``: upload a LR crop or a photo (or take an example), pick the
model and options, watch the search, and get the K faces with their downscale
beside the input, a residual map and a within-ε badge each, plus a zip of the
PNGs and ``report.json``.

What the page never does: fetch anything from a host other than this server
(system fonts instead of Google Fonts, Gradio's analytics off, no share link),
or write outside the server's temporary folder, which is removed at exit.
One search runs at a time per server (one device); other requests queue and
Gradio shows each its place in the queue.
"""


import base64
import dataclasses
import html
import io
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
import zipfile
from collections import deque
from pathlib import Path
from typing import Dict, List, Optional

from .. import trust
from ..errors import PulseError, SearchCancelled, UploadError

log = logging.getLogger(__name__)

NOTICE = ("**These are imaginary people.** Every face below is invented by a generative model so that it "
          "downscales to your input. It is not the person in the input, it is not a recovery of them, and it "
          "must not be used to identify anyone.")
EXAMPLES = ("sampled face (8×8)", "aligned astronaut photo")
KEEP_RUNS = 20  # finished runs whose files stay on disk (their zips are what "Download all" serves)


@dataclasses.dataclass
class ServeSettings:
    """How ``pulse serve`` runs; the limits apply to every upload."""

    host: str = "127.0.0.1"
    port: int = 7860
    model: str = "default"
    device: Optional[str] = None
    max_bytes: int = 20 * 2 ** 20
    max_pixels: int = 16_000_000
    max_samples: int = 8
    max_steps: int = 1000


# The one answer to an Operator box that names a file: the same bytes whatever the path is (missing, a
# folder, a non-image, a real image), so the page tells a visitor nothing about the server's files.
MASK_REFUSED = ("The Operator box takes no file paths (mask:PATH). To count only some pixels, upload a mask "
                "image in the Mask field instead.")


def _refuse_paths(path: str):
    raise UploadError(MASK_REFUSED)


@dataclasses.dataclass(frozen=True)
class SearchRequest:
    """What the page's form asks for (values as the widgets give them; :meth:`Runner.search` checks them)."""

    upload: Optional[str] = None   # the uploaded file's path on the server, or None
    example: str = "none"          # one of EXAMPLES when there is no upload
    model: str = "default"
    lr_size: str = "as uploaded"
    samples: int = 4
    steps: int = 100
    seed: object = ""              # "" for random
    early_stop: bool = False
    align: bool = False
    operator: str = ""             # "" for detected
    mask: Optional[str] = None     # an uploaded mask image (white = the pixels that count), or None
    preset: str = "paper"          # the search: "paper" or "adaptive" (PulseOptions.preset)
    expand: bool = True            # adaptive only: widen the latent space on a plateau


def _png_data_uri(x) -> str:
    """A (3, h, w) tensor in [0, 1] as an inline PNG (the page fetches nothing for it)."""
    from PIL import Image

    arr = (x.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _upscale_nearest(x, size: int):
    import torch.nn.functional as F

    return F.interpolate(x[None], size=(size, size), mode="nearest")[0]


class Runner:
    """Models, examples and searches for the page; one search at a time."""

    def __init__(self, settings: ServeSettings, workdir: Path):
        self.settings = settings
        self.workdir = Path(workdir)
        self.models: Dict[str, object] = {}
        self.lock = threading.Lock()
        self.flags: Dict[str, Dict[str, threading.Event]] = {}
        self.finished: deque = deque()

    # -- models ---------------------------------------------------------------

    def model_choices(self) -> List[str]:
        """The bundled model and every registry model already downloaded (or the --model path)."""
        from ..hub import registry

        names = [n for n in registry.known_names()
                 if registry.model_status(registry.get_entry(n)) in ("bundled", "downloaded")]
        if self.settings.model not in names:
            names.insert(0, self.settings.model)
        return names

    def missing_models(self) -> List[str]:
        from ..hub import registry

        return [n for n in registry.known_names()
                if registry.model_status(registry.get_entry(n)) in ("not downloaded", "partial")]

    def model(self, name: str):
        from ..model import load_model
        from ..runtime import tune

        if name not in self.models:
            try:
                self.models[name] = load_model(name, device=tune(self.settings.device))
            except PulseError as exc:
                raise UploadError(f"cannot load model {name}: {exc}. Download it first with "
                                  f"`pulse models download {name}`.") from None
        return self.models[name]

    # -- inputs ---------------------------------------------------------------

    def example(self, which: str, model) -> Path:
        """The file of a built-in example for ``model`` (made once, in the server's folder)."""
        from ..images import save_image
        from ..ops.resample import bicubic_downscale

        path = self.workdir / "examples" / f"{model.source.replace('/', '_')}_{EXAMPLES.index(which)}.png"
        if path.is_file():
            return path
        if which == EXAMPLES[0]:
            import torch

            G = model.generator
            z = torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(0)).to(model.device)
            with torch.no_grad():
                hr = ((G.sample(z, truncation_psi=0.7, noise_mode="const") + 1) / 2).clamp(0, 1).cpu()
            lr = bicubic_downscale(hr, max(1, G.resolution // 8))[0]
        else:
            from ..align import demo_photo

            try:
                lr, _ = demo_photo(model, min(32, model.resolution // 4))
            except Exception as exc:  # noqa: BLE001 - no detector installed, no face: say so on the page
                raise UploadError(f"the photo example is unavailable here: {exc}") from None
        return save_image(lr.clamp(0, 1), path)

    def check_upload(self, path: Optional[str]) -> Path:
        """The uploaded file, if it is within the byte and pixel limits and decodes as an image."""
        from PIL import Image, UnidentifiedImageError

        if not path:
            raise UploadError("Upload an image, or choose an example.")
        p = Path(path)
        size = p.stat().st_size
        if size > self.settings.max_bytes:
            raise UploadError(f"The file is {size / 2 ** 20:.1f} MB; this server takes at most "
                              f"{self.settings.max_bytes / 2 ** 20:.0f} MB.")
        try:
            with Image.open(p) as img:
                w, h = img.size
        except Image.DecompressionBombError:
            raise UploadError(f"The image has far more pixels than this server takes (at most "
                              f"{self.settings.max_pixels / 1e6:.0f} MP). Shrink or crop it first.") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            raise UploadError(f"{p.name[:80]} is not an image this server can read (PNG, JPEG, WebP or BMP).") \
                from None
        if w * h > self.settings.max_pixels:
            raise UploadError(f"The image is {w}×{h} = {w * h / 1e6:.1f} MP; this server takes at most "
                              f"{self.settings.max_pixels / 1e6:.0f} MP. Shrink or crop it first.")
        return p

    # -- stop / cancel --------------------------------------------------------

    def _flags(self, session: str) -> Dict[str, threading.Event]:
        return self.flags.setdefault(session, {"stop": threading.Event(), "cancel": threading.Event()})

    def stop(self, session: str) -> None:
        self._flags(session)["stop"].set()

    def cancel(self, session: str) -> None:
        self._flags(session)["cancel"].set()

    # -- a search -------------------------------------------------------------

    def search(self, session: str, request: SearchRequest):
        """Run one search; yields ("progress", text, fraction) and finally ("done", html, zip path, text)."""
        from ..images import read_mask as read_image_file
        from ..ops.operators.base import split_terms
        from ..pipelines.upsample import AlignMode, RunContext, UpsampleJob, upsample_files
        from ..search import PulseOptions

        model = self.model(request.model)
        if request.upload:
            path = self.check_upload(request.upload)
        elif request.example in EXAMPLES:
            path = self.example(request.example, model)
        else:
            raise UploadError("Upload an image, or choose an example.")
        samples = int(min(max(int(request.samples or 1), 1), self.settings.max_samples))
        steps = int(min(max(int(request.steps or 1), 1), self.settings.max_steps))
        size = None if request.lr_size in (None, "", "as uploaded") else int(request.lr_size)
        try:
            seed = None if str(request.seed if request.seed is not None else "").strip() == "" else int(request.seed)
        except (TypeError, ValueError):
            raise UploadError(f"The seed must be a whole number, or empty for a random one; got "
                              f"{str(request.seed)[:80]!r}.") from None
        from ..search.options import PRESETS

        preset = request.preset if request.preset in PRESETS else "paper"
        adaptive = preset == "adaptive"
        opts = PulseOptions(steps=steps, early_stop=bool(request.early_stop), preset=preset,
                            **({"expand": bool(request.expand)} if adaptive else {}))
        spec = (request.operator or "").strip()
        if spec:
            try:
                terms = split_terms(spec)
            except PulseError as exc:
                raise UploadError(str(exc)) from None
            if any(t.lower().startswith("mask:") for t in terms):
                raise UploadError(MASK_REFUSED)
        mask_path = None
        if request.mask:
            mask_path = self.check_upload(request.mask)
            spec = f"{spec}+mask:{mask_path}" if spec else f"mask:{mask_path}"
        try:
            job = UpsampleJob(opts, samples=samples, seed=seed, lr_size=size,
                              align=AlignMode.WARP if request.align else AlignMode.OFF, operator=spec or None)
        except PulseError as exc:
            raise UploadError(str(exc)) from None

        def read_mask(path: str):
            # Only the mask this request uploaded is ever read; any other path gets the one refusal.
            if mask_path is None or path != str(mask_path):
                _refuse_paths(path)
            return read_image_file(path)
        # Fresh flags for this search: a cancelled one still running keeps (and obeys) its own.
        flags = self.flags[session] = {"stop": threading.Event(), "cancel": threading.Event()}
        run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=self.workdir))
        src = run_dir / "input" / f"input{path.suffix.lower() or '.png'}"
        src.parent.mkdir()
        shutil.copyfile(path, src)
        events: "queue.Queue" = queue.Queue()

        def progress(stem, step, total, info):
            if flags["cancel"].is_set():
                raise SearchCancelled()
            events.put(("step", step, total, info))

        def work():
            try:
                with self.lock:  # one search per device, whatever Gradio's queue does
                    report = upsample_files([src], model, run_dir / "out", job,
                                            RunContext(progress=progress, stop=flags["stop"].is_set,
                                                       read_mask=read_mask))
                events.put(("done", report))
            except SearchCancelled:
                events.put(("cancelled",))
            except PulseError as exc:
                events.put(("error", str(exc)))
            except Exception as exc:  # noqa: BLE001 - shown on the page; the server keeps serving
                events.put(("error", f"{exc.__class__.__name__}: {exc}"))

        start = time.monotonic()
        thread = threading.Thread(target=work, name="pulse-search", daemon=True)
        thread.start()
        try:
            while True:
                try:
                    ev = events.get(timeout=0.25)
                except queue.Empty:
                    continue
                if ev[0] == "step":
                    _, step, total, info = ev
                    elapsed = time.monotonic() - start
                    left = elapsed / step * (total - step) if step else 0.0
                    where = (f"step {info['step']} · {step}/{total} generator passes · {info['alive']} candidates "
                             f"alive · stage {info['stage']}" if "alive" in info else f"step {step}/{total}")
                    yield ("progress", f"{where} · L2 {info['l2']:.2e} (best {info['best_l2']:.2e}) "
                                       f"vs ε {opts.eps:g} · {info['done']}/{info['batch']} within ε · "
                                       f"at most {left:.0f} s left", step / total)
                    continue
                if ev[0] == "cancelled":
                    shutil.rmtree(run_dir, ignore_errors=True)
                    yield ("cancelled", "Cancelled.", 0.0)
                    return
                if ev[0] == "error":
                    shutil.rmtree(run_dir, ignore_errors=True)
                    raise UploadError(ev[1])
                report = ev[1]
                break
        except GeneratorExit:
            flags["cancel"].set()  # the page went away (Cancel, a closed tab): end the search
            raise
        if not report.results:
            shutil.rmtree(run_dir, ignore_errors=True)
            reason = "; ".join(e.error for e in report.errors) or "no result"
            raise UploadError(reason.replace(str(src), "the upload"))
        cards = self._cards(report, model)
        zip_path = self._zip(run_dir)
        self._keep(run_dir)
        took = time.monotonic() - start
        stopped = " (stopped early: best so far)" if report.stopped else ""
        yield ("done", cards, str(zip_path), f"{report.consistent()}/{len(report.results)} within ε={opts.eps:g} in "
                                            f"{took:.1f} s{stopped}.")

    def _cards(self, report, model) -> str:
        """The results as HTML, from the tensors the run kept (no PNG is read back from disk)."""
        eps = report.settings["options"]["eps"]
        size = model.resolution
        parts = []
        for r in report.results:
            im = r.images
            hr, ds, lr = im["image"], im["downscaled"], im["input"]
            view = 112
            badge = ("<span class='pulse-badge no'>out of domain</span>" if r.verdict == "out of domain"
                     else "<span class='pulse-badge ok'>within ε</span>" if r.success
                     else "<span class='pulse-badge no'>not within ε</span>")
            t = r.trust or {}
            domain = (f" · in-domain p {t['in_domain_p']:.3f}" + ("" if t["in_domain"] else
                      " (unlike the model's own faces)") if "in_domain_p" in t else "")
            imgs = [("face", _upscale_nearest(hr, 192) if size < 192 else hr),
                    ("its downscale", _upscale_nearest(ds, view)),
                    ("input", _upscale_nearest(lr, view)),
                    ("residual ×8", _upscale_nearest(im["residual"], view))]
            figs = "".join(f"<figure><img alt='{html.escape(n)}' src='{_png_data_uri(x)}'/>"
                           f"<figcaption>{html.escape(n)}</figcaption></figure>" for n, x in imgs)
            parts.append(f"<div class='pulse-card'><div class='pulse-head'>{badge} "
                         f"<code>{html.escape(r.output)}</code> · operator <code>"
                         f"{html.escape(r.spec or r.operator.get('name', '?'))}</code> · seed {r.seed} · "
                         f"L2 {r.best_l2:.2e} "
                         f"(ε {eps:g}) · {r.steps} steps"
                         + (f" · found in the {html.escape(r.stage)} stage" if r.stage != "w+" else "")
                         + html.escape(domain) + f"</div><div class='pulse-imgs'>{figs}</div></div>")
        lines = trust.summary([r.trust for r in report.results], len(report.results))
        if len(report.results) > 1 and any("identity" in x or "faces" in x for x in lines):
            parts.append("<div class='pulse-identity'>" + html.escape("; ".join(
                x for x in lines if not x.startswith("in-domain"))) + ".</div>")
        spread = report.results[0].images.get("spread")
        if len(report.results) > 1 and spread is not None:
            x = _upscale_nearest(spread, 192) if size < 192 else spread
            parts.append(f"<div class='pulse-spread'><div class='pulse-head'>Where the {len(report.results)} faces "
                         f"disagree (per-pixel spread): bright is invented by the model, dark is pinned down by "
                         f"the input</div><div class='pulse-imgs'><figure><img alt='spread' "
                         f"src='{_png_data_uri(x)}'/></figure></div></div>")
        return "<div class='pulse-results'>" + "".join(parts) + "</div>"

    def _zip(self, run_dir: Path) -> Path:
        out = run_dir / "out"
        zpath = run_dir / "pulse-results.zip"
        with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as z:
            for f in sorted(out.iterdir()):
                if f.is_file() and (f.suffix == ".png" or f.name == "report.json"):
                    z.write(f, f.name)
        return zpath

    def _keep(self, run_dir: Path) -> None:
        self.finished.append(run_dir)
        while len(self.finished) > KEEP_RUNS:
            shutil.rmtree(self.finished.popleft(), ignore_errors=True)


CSS = """
.pulse-results { display: flex; flex-direction: column; gap: 12px; }
.pulse-card, .pulse-spread { border: 1px solid #ccc; border-radius: 8px; padding: 8px; }
.pulse-imgs { display: flex; flex-wrap: wrap; gap: 8px; align-items: flex-end; }
.pulse-imgs figure { margin: 0; text-align: center; }
.pulse-imgs img { image-rendering: pixelated; display: block; }
.pulse-badge { font-weight: bold; padding: 2px 8px; border-radius: 10px; color: white; }
.pulse-badge.ok { background: #1a7f37; }
.pulse-badge.no { background: #b42318; }
"""


def build_app(runner: Runner):
    """The page: inputs and options on the left, progress, notice and results on the right."""
    import gradio as gr

    from ..ops.resample import valid_lr_sizes

    default = runner.settings.model
    missing = runner.missing_models()
    with gr.Blocks(title="PULSE", analytics_enabled=False) as app:
        gr.Markdown("# PULSE: faces that downscale to your input\nUpload a low-resolution face crop, or a "
                    "photo with **align** on, or take an example.")
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Image (LR face crop, or a photo with align on)", type="filepath",
                                 elem_id="upload")
                example = gr.Radio(["none", *EXAMPLES], value="none", label="…or an example", elem_id="example")
                model = gr.Dropdown(runner.model_choices(), value=default, label="Model", elem_id="model")
                if missing:
                    gr.Markdown("Not downloaded: " + ", ".join(f"`{m}`" for m in missing)
                                + ". Download with `pulse models download NAME` and restart the server.")
                try:
                    res = runner.model(default).resolution
                    sizes = ["as uploaded"] + [str(s) for s in valid_lr_sizes(res) if s < res]
                except UploadError:
                    sizes = ["as uploaded"]
                lr_size = gr.Dropdown(sizes, value="as uploaded", label="LR size (resize the input to)",
                                      elem_id="lr_size")
                samples = gr.Slider(1, runner.settings.max_samples, value=4, step=1, label="Samples K",
                                    elem_id="samples")
                steps = gr.Number(100, label="Steps", precision=0, minimum=1, maximum=runner.settings.max_steps,
                                  elem_id="steps")
                seed = gr.Textbox("", label="Seed (empty: random)", elem_id="seed")
                early = gr.Checkbox(False, label="Stop early once every sample is within ε", elem_id="early")
                preset = gr.Dropdown(["paper", "adaptive"], value="paper", elem_id="preset",
                                     label="Search: paper (PULSE's fixed steps) or adaptive (the same budget, "
                                           "several starts, stops at ε)")
                expand = gr.Checkbox(True, elem_id="expand",
                                     label="Adaptive: widen the latent space when stuck (closer fit, less realism)")
                align = gr.Checkbox(False, label="Align: detect and crop the face in a photo", elem_id="align")
                operator = gr.Textbox("", label="Operator (empty: detected; e.g. box:8@3,5, gray+bicubic:8, "
                                      "blur:gauss:1.5)", elem_id="operator")
                mask = gr.File(label="Mask (optional): white where the input's pixels count, at its size",
                               type="filepath", elem_id="mask")
                with gr.Row():
                    run_btn = gr.Button("Run", variant="primary", elem_id="run")
                    stop_btn = gr.Button("Stop (keep best so far)", elem_id="stop")
                    cancel_btn = gr.Button("Cancel", elem_id="cancel")
            with gr.Column(scale=2):
                status = gr.Markdown("", elem_id="status")
                gr.Markdown(NOTICE, elem_id="notice")
                results = gr.HTML("", elem_id="results")
                download = gr.File(label="Download all (PNGs + report.json)", elem_id="download",
                                   interactive=False)

        def run(upload, example, model, lr_size, samples, steps, seed, early, align, operator, mask, preset, expand,
                request: gr.Request, progress=gr.Progress()):
            search = runner.search(request.session_hash, SearchRequest(upload, example, model, lr_size, samples,
                                                                       steps, seed, early, align, operator, mask,
                                                                       preset, expand))
            try:
                for ev in search:
                    if ev[0] == "progress":
                        progress(ev[2], desc=ev[1])
                        yield gr.update(value=ev[1]), gr.update(), gr.update()
                    elif ev[0] == "cancelled":
                        yield gr.update(value=ev[1]), gr.update(value=""), gr.update(value=None)
                    else:
                        yield gr.update(value=ev[3]), gr.update(value=ev[1]), gr.update(value=ev[2])
            except UploadError as exc:
                raise gr.Error(str(exc), print_exception=False) from None
            finally:
                search.close()

        run_btn.click(run, [upload, example, model, lr_size, samples, steps, seed, early, align, operator, mask,
                            preset, expand],
                      [status, results, download], concurrency_limit=1, concurrency_id="search")
        stop_btn.click(_session_call(runner.stop), None, None, queue=False)
        # Cancel only raises the search's flag; the search then ends at its next step and its own
        # last update says "Cancelled.". Gradio's `cancels=` would kill the job from outside, and a
        # late kill could land on the next run the same page had just started.
        cancel_btn.click(_session_call(runner.cancel), None, None, queue=False)
    return app


def _session_call(method, says=None):
    import gradio as gr

    def call(request: gr.Request):
        method(request.session_hash)
        return says
    return call


def _free_port(host: str) -> int:
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def theme():
    """Gradio's default look with system fonts: the default theme would fetch Google Fonts."""
    import gradio as gr

    return gr.themes.Default(font=["system-ui", "Segoe UI", "Helvetica", "Arial", "sans-serif"],
                             font_mono=["ui-monospace", "Menlo", "Consolas", "monospace"])


def serve(settings: ServeSettings, *, block: bool = True):
    """Start the server; returns (app, url, workdir) when ``block`` is False (tests), else serves until Ctrl-C.

    The temporary folder (uploads, results, Gradio's cache) is removed when the server stops.
    """
    workdir = Path(tempfile.mkdtemp(prefix="pulse-serve-"))
    os.environ["GRADIO_TEMP_DIR"] = str(workdir / "gradio")
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not settings.port:
        settings = dataclasses.replace(settings, port=_free_port(settings.host))
    runner = Runner(settings, workdir)
    app = build_app(runner)
    app.queue(default_concurrency_limit=1)
    try:
        _, url, _ = app.launch(server_name=settings.host, server_port=settings.port, prevent_thread_lock=True,
                               quiet=True, share=False, theme=theme(), css=CSS, ssr_mode=False, footer_links=[],
                               max_file_size=settings.max_bytes, show_error=True, inbrowser=False,
                               mcp_server=False, pwa=False)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    if not block:
        return app, url, workdir
    log.info("PULSE is at %s  (Ctrl-C stops it)", url)

    def terminated(signum, frame):  # `kill` stops the server as Ctrl-C does: the uploads go with it
        raise KeyboardInterrupt

    import signal

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        app.close()
        shutil.rmtree(workdir, ignore_errors=True)

