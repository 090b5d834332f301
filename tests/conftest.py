import pytest
import torch

from pulse_sr.networks.stylegan1 import StyleGAN1Generator
from pulse_sr.prior import compute_gaussian_fit

torch.set_num_threads(min(2, torch.get_num_threads()))


def tiny_generator(resolution: int = 16, seed: int = 0, fit: bool = True) -> StyleGAN1Generator:
    """A 2-layer-mapping, 4-16 channel StyleGAN v1 with random weights (diffusers' dummy-component style)."""
    torch.manual_seed(seed)
    G = StyleGAN1Generator(resolution=resolution, fmap_base=64, fmap_max=16, latent_dim=16, w_dim=16,
                           mapping_layers=2, mapping_fmaps=16)
    with torch.no_grad():
        for layer in G.synthesis.layers:
            layer.noise_strength.normal_(0, 0.1)
    G.eval().requires_grad_(False)
    if fit:
        G.gaussian_fit = compute_gaussian_fit(G, num_samples=4096, chunk=1024)
    return G


@pytest.fixture
def tiny_G():
    return tiny_generator()
