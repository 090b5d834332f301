"""GAN training of a StyleGAN v1 generator, used to make the bundled model.

Recipe for small data: non-saturating logistic loss, lazy R1 penalty on reals,
DiffAugment on everything D sees, style mixing, and an EMA of G's weights.
No progressive growing. Checkpoints make every run resumable.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import SettingsError
from ..runtime import pick_device
from ..safe_paths import create_new, open_append
from ..images import make_grid, save_image
from ..formats.safetensors_file import save_generator
from ..networks.stylegan1 import StyleGAN1Config, StyleGAN1Generator
from .augment import diff_augment
from .dataset import check_source, load_dataset
from .discriminator import Discriminator

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainOptions:
    data: str                          # Folder of images or .npz pack.
    out: str                           # Output folder (checkpoints, samples, final model).
    resolution: int = 64
    latent_dim: int = 256
    w_dim: int = 256
    mapping_layers: int = 8
    fmap_base: int = 2048
    fmap_max: int = 128
    d_channel_base: int = 4096
    d_channel_max: int = 256
    batch: int = 32
    lr: float = 0.002
    r1_gamma: float = 0.1
    r1_interval: int = 16
    ema_kimg: float = 10.0
    style_mixing: float = 0.9
    augment: str = "color,translation,cutout"
    xflip: bool = True
    total_kimg: float = 500.0          # Stop after this many thousand real images shown.
    max_minutes: float = 0.0           # Also stop after this wall time (0 = no limit).
    log_every: int = 50                # Iterations between log lines.
    sample_every_kimg: float = 20.0
    checkpoint_every_kimg: float = 20.0
    limit: int = 0                     # Use only the first N images (0 = all).
    seed: int = 0
    device: str = "auto"
    threads: int = 0                   # torch CPU threads (0 = default).
    init: str = ""                     # Start G and G_ema from this pulse-sr .safetensors (same architecture).


    def validate(self) -> None:
        """A one-line SettingsError for any value that cannot train (before anything is built or read)."""
        def finite(name, low=None, low_open=False):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or \
                    (low is not None and (v <= low if low_open else v < low)):
                bound = "" if low is None else f" {'above' if low_open else 'at least'} {low}"
                raise SettingsError(f"--{name.replace('_', '-')} must be a finite number{bound}, got {v}")
        for name in ("lr", "ema_kimg", "sample_every_kimg", "checkpoint_every_kimg", "total_kimg"):
            finite(name, 0, low_open=True)
        for name in ("r1_gamma", "max_minutes"):
            finite(name, 0)
        for name in ("batch", "r1_interval", "log_every", "latent_dim", "w_dim", "mapping_layers", "fmap_base",
                     "fmap_max", "d_channel_base", "d_channel_max"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise SettingsError(f"--{name.replace('_', '-')} must be a whole number of at least 1, got {v}")
        for name in ("limit", "threads", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise SettingsError(f"--{name.replace('_', '-')} must be a whole number of at least 0, got {v}")
        if not 0 <= self.style_mixing <= 1:
            raise SettingsError(f"--style-mixing must be from 0 to 1, got {self.style_mixing}")
        r = self.resolution
        if not (isinstance(r, int) and 8 <= r <= 1024 and r & (r - 1) == 0):
            raise SettingsError(f"--resolution must be a power of two from 8 to 1024, got {r}")


def save_grid(images: torch.Tensor, path, nrow: int) -> None:
    """(N, 3, H, W) in [-1, 1] -> PNG grid with ``nrow`` images per row."""
    x = (images.detach().float().cpu() + 1) / 2
    rows = [list(x[i:i + nrow]) for i in range(0, x.shape[0], nrow)]
    save_image(make_grid(rows, pad=0), path)


def _init_from(G, G_ema, path, cfg) -> None:
    from ..formats.safetensors_file import load_saved_generator

    src = load_saved_generator(path).generator
    if src.cfg != cfg:
        raise SettingsError(f"--init {path}: its config {src.cfg.to_dict()} differs from the requested {cfg.to_dict()}")
    G.load_state_dict(src.state_dict())
    G_ema.load_state_dict(src.state_dict())


def _mixed_ws(G: StyleGAN1Generator, z: torch.Tensor, prob: float) -> torch.Tensor:
    w = G.mapping(z)
    ws = w[:, None, :].expand(-1, G.num_ws, -1)
    if prob > 0 and np.random.rand() < prob:
        cutoff = np.random.randint(1, G.num_ws)
        w2 = G.mapping(torch.randn_like(z))
        layer = torch.arange(G.num_ws, device=z.device)[None, :, None]
        ws = torch.where(layer < cutoff, ws, w2[:, None, :].expand(-1, G.num_ws, -1))
    return ws, w


def train(opts: TrainOptions, progress=None) -> Path:
    """Train (or resume) and return the path of the final EMA generator.

    Losses, images/s and checkpoints are logged; ``progress(done, total)`` follows the
    loading of a folder of images.
    """
    opts.validate()
    check_source(opts.data)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(opts.device)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(opts.seed)
    np.random.seed(opts.seed)

    cfg = StyleGAN1Config(resolution=opts.resolution, latent_dim=opts.latent_dim, w_dim=opts.w_dim,
                          mapping_layers=opts.mapping_layers, mapping_fmaps=opts.w_dim,
                          fmap_base=opts.fmap_base, fmap_max=opts.fmap_max)
    G = StyleGAN1Generator(cfg).to(device)
    D = Discriminator(opts.resolution, opts.d_channel_base, opts.d_channel_max).to(device)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    # Lazy regularisation: scale Adam's lr and betas as in StyleGAN2 (Appendix B).
    mb = opts.r1_interval / (opts.r1_interval + 1)
    opt_G = torch.optim.Adam(G.parameters(), lr=opts.lr, betas=(0.0, 0.99), eps=1e-8)
    opt_D = torch.optim.Adam(D.parameters(), lr=opts.lr * mb, betas=(0.0, 0.99 ** mb), eps=1e-8)

    nimg = 0
    ckpt_path = out / "checkpoint.pt"
    if opts.init and not ckpt_path.exists():
        _init_from(G, G_ema, opts.init, cfg)
        log.info(f"G and G_ema start from {opts.init}; D starts fresh")
    if ckpt_path.exists():
        from ..formats.torch_files import torch_load_weights

        ck = torch_load_weights(ckpt_path, noun="training checkpoint")  # checked, weights-only, on the CPU
        if StyleGAN1Config.from_dict(ck["config"]) != cfg:  # files before the family tag compare too
            raise SettingsError(f"{ckpt_path}: checkpoint config {ck['config']} differs from the requested "
                             f"{cfg.to_dict()}; use another --out or the same options")
        G.load_state_dict(ck["G"])
        D.load_state_dict(ck["D"])
        G_ema.load_state_dict(ck["G_ema"])
        opt_G.load_state_dict(ck["opt_G"])
        opt_D.load_state_dict(ck["opt_D"])
        nimg = int(ck["nimg"])
        log.info(f"resumed from {ckpt_path} at {nimg / 1000:.3f} kimg")

    log.info(f"loading data from {opts.data}")
    data = load_dataset(opts.data, opts.resolution, opts.limit, progress)
    n_data = data.shape[0]
    data = data.to(device)
    log.info(f"{n_data} images, device {device}, G {sum(p.numel() for p in G.parameters()) / 1e6:.2f} M params, "
        f"D {sum(p.numel() for p in D.parameters()) / 1e6:.2f} M params")

    grid_z = torch.randn(64, cfg.latent_dim, generator=torch.Generator().manual_seed(123)).to(device)
    grid_noise = G.make_noise(64, "random", generator=torch.Generator().manual_seed(124), device="cpu")
    grid_noise = [n.to(device) for n in grid_noise]

    def real_batch() -> torch.Tensor:
        idx = torch.randint(0, n_data, (opts.batch,), device=device)
        x = data[idx].float() / 127.5 - 1.0
        if opts.xflip:
            flip = torch.rand(opts.batch, 1, 1, 1, device=device) < 0.5
            x = torch.where(flip, x.flip(3), x)
        return x

    def snapshot(final: bool = False) -> None:
        tmp = out / f".checkpoint.{os.getpid()}.tmp"
        with create_new(tmp) as f:  # never through a link planted in OUT (see pulse_sr.safe_paths)
            torch.save({"G": G.state_dict(), "D": D.state_dict(), "G_ema": G_ema.state_dict(),
                        "opt_G": opt_G.state_dict(), "opt_D": opt_D.state_dict(), "nimg": nimg,
                        "config": cfg.to_dict()}, f)
        os.replace(tmp, ckpt_path)
        with torch.no_grad():
            ws = G_ema.mapping(grid_z)[:, None].expand(-1, cfg.num_ws, -1)
            imgs = G_ema.synthesize(ws, grid_noise)
        save_grid(imgs, out / f"samples_{nimg // 1000:06d}kimg.png", nrow=8)
        if final:
            save_grid(imgs, out / "samples_final.png", nrow=8)

    ema_beta = 0.5 ** (opts.batch / max(opts.ema_kimg * 1000, 1e-8))
    start = time.time()
    t_log, n_log = time.time(), nimg
    next_sample = (nimg // int(opts.sample_every_kimg * 1000) + 1) * int(opts.sample_every_kimg * 1000)
    next_ckpt = (nimg // int(opts.checkpoint_every_kimg * 1000) + 1) * int(opts.checkpoint_every_kimg * 1000)
    it = 0
    stats = {}
    while nimg < opts.total_kimg * 1000:
        if opts.max_minutes and (time.time() - start) > opts.max_minutes * 60:
            log.info(f"time limit of {opts.max_minutes} min reached")
            break
        # --- D step (logistic loss), with lazy R1 every r1_interval steps.
        z = torch.randn(opts.batch, cfg.latent_dim, device=device)
        with torch.no_grad():
            ws, _ = _mixed_ws(G, z, opts.style_mixing)
            fake = G.synthesize(ws)
        real = real_batch()
        d_fake = D(diff_augment(fake, opts.augment))
        d_real = D(diff_augment(real, opts.augment))
        loss_D = F.softplus(d_fake).mean() + F.softplus(-d_real).mean()
        opt_D.zero_grad(set_to_none=True)
        loss_D.backward()
        opt_D.step()
        if it % opts.r1_interval == 0:
            real_r = real.detach().requires_grad_(True)
            d_r = D(diff_augment(real_r, opts.augment))
            (grad,) = torch.autograd.grad(d_r.sum(), real_r, create_graph=True)
            r1 = grad.square().sum(dim=(1, 2, 3)).mean()
            opt_D.zero_grad(set_to_none=True)
            (r1 * (opts.r1_gamma / 2) * opts.r1_interval).backward()
            opt_D.step()
            stats["r1"] = r1.item()
        # --- G step (non-saturating loss).
        z = torch.randn(opts.batch, cfg.latent_dim, device=device)
        ws, w = _mixed_ws(G, z, opts.style_mixing)
        fake = G.synthesize(ws)
        loss_G = F.softplus(-D(diff_augment(fake, opts.augment))).mean()
        opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        opt_G.step()
        # --- Track mean W (truncation) and the EMA generator.
        with torch.no_grad():
            G.w_avg.copy_(w.detach().mean(0).lerp(G.w_avg, 0.995))
            for p_ema, p in zip(G_ema.parameters(), G.parameters()):
                p_ema.lerp_(p, 1 - ema_beta)
            for b_ema, b in zip(G_ema.buffers(), G.buffers()):
                b_ema.copy_(b)
        nimg += opts.batch
        it += 1
        if it % opts.log_every == 0:
            now = time.time()
            rate = (nimg - n_log) / max(now - t_log, 1e-9)
            t_log, n_log = now, nimg
            rec = {"kimg": round(nimg / 1000, 3), "loss_G": round(loss_G.item(), 4),
                   "loss_D": round(loss_D.item(), 4), "r1": round(stats.get("r1", float("nan")), 4),
                   "img_per_s": round(rate, 1), "minutes": round((now - start) / 60, 2)}
            log.info(" ".join(f"{k} {v}" for k, v in rec.items()))
            with open_append(out / "log.jsonl") as f:
                f.write(json.dumps(rec) + "\n")
        if nimg >= next_sample or nimg >= next_ckpt:
            snapshot()
            next_sample += int(opts.sample_every_kimg * 1000)
            while next_ckpt <= nimg:
                next_ckpt += int(opts.checkpoint_every_kimg * 1000)
    snapshot(final=True)
    final = save_generator(G_ema.cpu(), out / "generator.safetensors",
                           extras={"trained_kimg": nimg / 1000, "training_data": str(opts.data)})
    log.info(f"wrote {final} after {nimg / 1000:.1f} kimg")
    return final
