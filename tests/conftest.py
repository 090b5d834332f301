import contextlib
import http.server
import threading

import pytest
import torch

from pulse_sr.model import PulseModel
from pulse_sr.networks.stylegan1 import StyleGAN1Generator
from pulse_sr.search.prior import compute_gaussian_fit

torch.set_num_threads(min(2, torch.get_num_threads()))


def tiny_generator(resolution: int = 16, seed: int = 0, **kwargs) -> StyleGAN1Generator:
    """A 2-layer-mapping, 4-16 channel StyleGAN v1 with random weights (diffusers' dummy-component style)."""
    torch.manual_seed(seed)
    G = StyleGAN1Generator(resolution=resolution, fmap_base=64, fmap_max=16, latent_dim=16, w_dim=16,
                           mapping_layers=2, mapping_fmaps=16, **kwargs)
    with torch.no_grad():
        for layer in G.synthesis.layers:
            layer.noise_strength.normal_(0, 0.1)
    return G.eval().requires_grad_(False)


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """The generator-equivalence measure: max|ours - ref| / max(1, max|ref|)."""
    return float((ours - ref).abs().max()) / max(1.0, float(ref.abs().max()))


def tiny_model(resolution: int = 16, seed: int = 0, **kwargs) -> PulseModel:
    """tiny_generator with its Gaussian fit (4096 samples), as load_model would return it."""
    G = tiny_generator(resolution, seed, **kwargs)
    return PulseModel(G, compute_gaussian_fit(G, num_samples=4096, chunk=1024), source=f"tiny-{resolution}",
                      format="test")


@pytest.fixture
def tiny_G():
    return tiny_model()


@pytest.fixture(scope="module")
def default_model():
    """The bundled model, loaded once per test module (the model is never moved or changed by a search)."""
    import pulse_sr

    return pulse_sr.load_model("default")


@contextlib.contextmanager
def local_http_server(handler):
    """A threaded HTTP server on 127.0.0.1 with ``handler``, shut down on exit (download tests only)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True, scope="session")
def _small_trust_calibrations():
    """The suite calibrates the out-of-domain test and the identity scale on fewer model samples than a
    run does (the same code, smaller sizes), so tests that run the bundled model stay fast on two cores."""
    from pulse_sr.trust import domain, identity

    saved = domain.DEFAULT_FIT, domain.DEFAULT_HELD, identity.STRANGERS
    domain.DEFAULT_FIT, domain.DEFAULT_HELD, identity.STRANGERS = 300, 300, 40
    yield
    domain.DEFAULT_FIT, domain.DEFAULT_HELD, identity.STRANGERS = saved
