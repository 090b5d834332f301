"""PULSE's converted PyTorch files: ``synthesis.pt`` / ``mapping.pt`` state dicts and ``gaussian_fit.pt``.

The PULSE repository (adamian98/pulse) converted NVIDIA's StyleGAN v1 for its
PyTorch port. These files are ``torch.save`` pickles, read only with
``torch.load(weights_only=True)``: a file that asks for any class beyond plain
tensors and dicts is refused with :class:`UnsafePickleError`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

import torch

from ..errors import ModelFormatError
from ..networks.stylegan1 import StyleGAN1Config
from .common import Format, LoadedWeights, build_checked, check_keys, count_indexed, load_state_strict, shape_of
from .infer import fit_fmaps, resolution_and_channels
from .torch_files import torch_load_weights

__all__ = ["load_pulse_state_dicts", "load_gaussian_fit_pt", "PULSE_NOISE_SEED"]

# Seed of the fixed noise maps given to formats that carry none (the PULSE port).
PULSE_NOISE_SEED = 0


def _tensor_dict(obj, path: Path) -> Dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping):
        raise ModelFormatError(f"{path}: expected a state dict, got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if bad:
        raise ModelFormatError(f"{path}: state dict entries that are not tensors: {bad[:5]}")
    return dict(obj)


def _pulse_block_names(cfg: StyleGAN1Config) -> List[Tuple[str, str, str]]:
    """(block, conv module, epilogue module) of the reference port for each synthesis layer."""
    layers = [("4x4", "", "epi1"), ("4x4", "conv", "epi2")]
    for log2 in range(3, cfg.resolution_log2 + 1):
        r = 2 ** log2
        layers += [(f"{r}x{r}", "conv0_up", "epi1"), (f"{r}x{r}", "conv1", "epi2")]
    return layers


def _pulse_synthesis_table(cfg: StyleGAN1Config) -> Dict[str, str]:
    """Reference ``G_synthesis`` state-dict key -> StyleGAN1Generator key (layouts already match)."""
    table = {}
    for i, (block, conv, epi) in enumerate(_pulse_block_names(cfg)):
        ref, pt = f"blocks.{block}", f"synthesis.layers.{i}"
        if i == 0:
            # The reference adds its 4x4 bias to the const before the epilogue;
            # the sum is the same as ours adding it after the noise.
            table[f"{ref}.const"] = f"{pt}.const"
            table[f"{ref}.bias"] = f"{pt}.bias"
        else:
            # The reference adds the conv bias before the noise; addition commutes.
            table[f"{ref}.{conv}.weight"] = f"{pt}.weight"
            table[f"{ref}.{conv}.bias"] = f"{pt}.bias"
        table[f"{ref}.{epi}.noise.weight"] = f"{pt}.noise_strength"
        table[f"{ref}.{epi}.style_mod.lin.weight"] = f"{pt}.style.weight"
        table[f"{ref}.{epi}.style_mod.lin.bias"] = f"{pt}.style.bias"
    table["torgb.weight"] = "synthesis.torgb.weight"
    table["torgb.bias"] = "synthesis.torgb.bias"
    return table


def _pulse_blur_keys(cfg: StyleGAN1Config) -> List[str]:
    return [f"blocks.{2 ** k}x{2 ** k}.conv0_up.intermediate.kernel" for k in range(3, cfg.resolution_log2 + 1)]


def _check_blur_kernel(sd: Mapping[str, torch.Tensor], key: str, what: str) -> None:
    # The generator hard-codes the [1,2,1] blur; a file with another kernel would silently differ.
    k = torch.tensor([1.0, 2.0, 1.0])
    want = (k[:, None] * k[None, :] / 16.0)[None, None]
    have = sd[key]
    if tuple(have.shape) != (1, 1, 3, 3) or not torch.allclose(have.float(), want, atol=1e-6):
        raise ModelFormatError(f"{what}: {key} is not the [1,2,1] blur kernel the generator uses")


def load_pulse_state_dicts(synthesis_path, mapping_path=None) -> LoadedWeights:
    """Load PULSE's converted ``synthesis.pt`` (and optionally ``mapping.pt``).

    The files are state dicts of the PULSE PyTorch port (a port of the
    lernapparat converter); tensor layouts already match ours. That port uses
    ``nn.InstanceNorm2d`` (epsilon 1e-5, not the official 1e-8), so the config
    gets ``instance_norm_eps=1e-5`` to reproduce its outputs.

    The port stores no noise maps and no average W: ``noise_const{i}`` are
    drawn from a generator seeded with ``PULSE_NOISE_SEED`` and ``w_avg`` is
    zero. Without ``mapping_path`` the mapping network keeps its random
    initialisation and the result's ``has_mapping`` is False.
    """
    syn_path = Path(synthesis_path)
    what = str(syn_path)
    sd = _tensor_dict(torch_load_weights(syn_path), syn_path)
    msd = None
    if mapping_path is not None:
        map_path = Path(mapping_path)
        msd = _tensor_dict(torch_load_weights(map_path), map_path)

    # Architecture from the key names and shapes.
    blocks = [int(m.group(1)) for k in sd for m in [re.match(r"blocks\.(\d+)x\1\.", k)] if m]
    if not blocks:
        raise ModelFormatError(f"{what}: no keys like 'blocks.4x4.const'; not a PULSE synthesis.pt")
    resolution, channels = resolution_and_channels(
        blocks, lambda: shape_of(sd, "blocks.4x4.const", 4, what, noun='key')[1],
        lambda r: shape_of(sd, f"blocks.{r}x{r}.conv1.weight", 4, what, noun='key')[0], what)
    fmap_base, fmap_decay, fmap_max = fit_fmaps(channels, (8192, 1.0, 512), what)
    w_dim = shape_of(sd, "blocks.4x4.epi1.style_mod.lin.weight", 2, what, noun='key')[1]
    num_channels = shape_of(sd, "torgb.weight", 4, what, noun='key')[0]

    latent_dim, n_dense, fmaps = 512, 8, 512
    if msd is not None:
        mwhat = str(mapping_path)
        n_dense = count_indexed(msd, "dense{}.weight")
        if n_dense == 0:
            raise ModelFormatError(f"{mwhat}: missing key dense0.weight; not a PULSE mapping.pt")
        fmaps, latent_dim = shape_of(msd, "dense0.weight", 2, mwhat, noun='key')
        map_w_dim = shape_of(msd, f"dense{n_dense - 1}.weight", 2, mwhat, noun='key')[0]
        if map_w_dim != w_dim:
            raise ModelFormatError(f"{mwhat}: mapping outputs {map_w_dim}-d W but {what} expects {w_dim}-d")
        if n_dense == 1:
            fmaps = 512

    try:
        cfg = StyleGAN1Config(
            resolution=resolution, latent_dim=int(latent_dim), w_dim=int(w_dim), mapping_layers=n_dense,
            mapping_fmaps=int(fmaps), mapping_lrmul=0.01, fmap_base=fmap_base, fmap_decay=fmap_decay,
            fmap_max=fmap_max, num_channels=int(num_channels),
            fused_scale_min_res=128,  # The port fuses when the output is >= 128 px, as TF's 'auto'.
            instance_norm_eps=1e-5)   # nn.InstanceNorm2d default, see docstring.
    except ValueError as exc:
        raise ModelFormatError(f"{what}: {exc}") from exc

    table = _pulse_synthesis_table(cfg)
    blur_keys = _pulse_blur_keys(cfg)
    check_keys(what, sd, set(table) | set(blur_keys), against=f"a {resolution}px PULSE synthesis network")
    for key in blur_keys:
        _check_blur_kernel(sd, key, what)
    state = {ours: sd[ref].detach().float() for ref, ours in table.items()}

    G = build_checked(cfg, what)
    if msd is not None:
        mwhat = str(mapping_path)
        mtable = {}
        for i in range(n_dense):
            mtable[f"dense{i}.weight"] = f"mapping_network.layers.{i}.weight"
            mtable[f"dense{i}.bias"] = f"mapping_network.layers.{i}.bias"
        check_keys(mwhat, msd, mtable, against="a PULSE mapping network")
        state.update({ours: msd[ref].detach().float() for ref, ours in mtable.items()})
    else:
        own = G.state_dict()
        state.update({k: v for k, v in own.items() if k.startswith("mapping_network.")})

    gen = torch.Generator().manual_seed(PULSE_NOISE_SEED)
    for i, r in enumerate(G.noise_resolutions):
        state[f"synthesis.noise_const{i}"] = torch.randn(1, 1, r, r, generator=gen)
    state["w_avg"] = torch.zeros(cfg.w_dim)

    load_state_strict(G, state, what if msd is None else f"{what} + {mapping_path}")
    return LoadedWeights(G.eval().requires_grad_(False), format=Format.PULSE_STATE_DICT, has_mapping=msd is not None)


def load_gaussian_fit_pt(path, dim: Optional[int] = 512) -> Dict[str, torch.Tensor]:
    """Read PULSE's ``gaussian_fit.pt``: ``{'mean': (dim,), 'std': (dim,)}`` as float32.

    These are the statistics of leaky_relu(W, 5) that PULSE's spherical prior
    uses (paper Sec. 3.3). Pass ``dim=None`` to accept any length.
    """
    path = Path(path)
    obj = torch_load_weights(path)
    if not isinstance(obj, Mapping):
        raise ModelFormatError(f"{path}: expected a dict with 'mean' and 'std', got {type(obj).__name__}")
    check_keys(str(path), [str(k) for k in obj], ("mean", "std"), against="a Gaussian fit {mean, std}")
    out = {}
    for k in ("mean", "std"):
        v = obj[k]
        if not isinstance(v, torch.Tensor) or not v.is_floating_point() or v.ndim != 1:
            raise ModelFormatError(f"{path}: {k!r} must be a 1-D float tensor, got "
                                   f"{type(v).__name__} {tuple(getattr(v, 'shape', ()))}")
        if dim is not None and v.shape[0] != dim:
            raise ModelFormatError(f"{path}: {k!r} has shape {tuple(v.shape)}, expected ({dim},)")
        out[k] = v.detach().float().clone()
    if out["mean"].shape != out["std"].shape:
        raise ModelFormatError(f"{path}: 'mean' {tuple(out['mean'].shape)} and 'std' "
                               f"{tuple(out['std'].shape)} differ in shape")
    if not (torch.isfinite(out["mean"]).all() and torch.isfinite(out["std"]).all() and (out["std"] > 0).all()):
        raise ModelFormatError(f"{path}: Gaussian fit has non-finite values or a non-positive std")
    return out
