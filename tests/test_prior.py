import torch
import torch.nn.functional as F

from pulse_sr.model import cached_gaussian_fit
from pulse_sr.search.prior import compute_gaussian_fit, latent_to_w, mapping_hash

from conftest import tiny_generator


def test_fit_matches_direct_statistics():
    G = tiny_generator()
    fit = compute_gaussian_fit(G, num_samples=3000, chunk=700, seed=5)
    # Chunks of 700 draw the same numbers as one batch only if drawn in order from one generator.
    g = torch.Generator().manual_seed(5)
    z = torch.cat([torch.randn(n, G.z_dim, generator=g) for n in (700, 700, 700, 700, 200)])
    w = F.leaky_relu(G.mapping(z), 5.0)
    assert torch.allclose(fit["mean"], w.mean(0), atol=1e-5)
    assert torch.allclose(fit["std"], w.std(0), atol=1e-4)


def test_inverse_leaky_relu_undoes_mapping_activation():
    x = torch.randn(1000)
    assert torch.allclose(F.leaky_relu(F.leaky_relu(x, 0.2), 5.0), x, atol=1e-6)
    fit = {"mean": torch.zeros(4), "std": torch.ones(4)}
    v = torch.tensor([[-1.0, 2.0, -0.5, 0.0]])
    assert torch.allclose(latent_to_w(v, fit), torch.tensor([[-0.2, 2.0, -0.1, 0.0]]))


def test_cache_keyed_by_mapping_hash(tmp_path, monkeypatch):
    G = tiny_generator()
    calls = []
    import pulse_sr.model as model_mod

    real = model_mod.compute_gaussian_fit

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(model_mod, "compute_gaussian_fit", counting)
    fit1 = cached_gaussian_fit(G, tmp_path, num_samples=2000)
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and mapping_hash(G)[:24] in files[0].name
    fit2 = cached_gaussian_fit(G, tmp_path, num_samples=2000)
    assert len(calls) == 1 and torch.equal(fit1["mean"], fit2["mean"])
    # Different mapping weights -> a different key -> recomputed.
    G2 = tiny_generator(seed=1)
    assert mapping_hash(G2) != mapping_hash(G)
    cached_gaussian_fit(G2, tmp_path, num_samples=2000)
    assert len(calls) == 2 and len(list(tmp_path.iterdir())) == 2
    # A corrupt cache entry is recomputed, not trusted.
    files[0].write_bytes(b"junk")
    cached_gaussian_fit(G, tmp_path, num_samples=2000)
    assert len(calls) == 3
