"""Package a trained generator as the bundled default model.

    python scripts/bundle_model.py TRAINED.safetensors [--template crop_template.json] [--fit fit.pt]

Computes the Gaussian fit (1M mapping samples) unless --fit is given, records
the crop convention and training facts in the config, and writes
src/pulse_sr/models/default.safetensors.
"""

import argparse
import json
from pathlib import Path

import torch

from pulse_sr.formats.safetensors_file import load_saved_generator, save_generator
from pulse_sr.search.prior import compute_gaussian_fit

p = argparse.ArgumentParser()
p.add_argument("trained")
p.add_argument("--template", help="JSON crop template (scripts/crop_template.py output)")
p.add_argument("--fit", help="precomputed Gaussian fit (.pt with mean/std)")
p.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "src/pulse_sr/models/default.safetensors"))
p.add_argument("--extras", default="{}", help="extra JSON merged into the model's extras")
args = p.parse_args()

loaded = load_saved_generator(args.trained)
G, extras = loaded.generator, loaded.metadata
fit = torch.load(args.fit, weights_only=True) if args.fit else compute_gaussian_fit(G, 1_000_000, chunk=100_000)
extras = dict(extras)
extras.pop("training_data", None)
extras.update({
    "name": "default",
    "resolution": G.resolution,
    "training_data": "UTKFace aligned & cropped faces (train split, 22,158 images), resized to 64x64; "
                     "non-commercial research use only",
    "licence": "Weights trained on UTKFace: non-commercial research use only.",
    "gaussian_fit": "1,000,000 mapping samples, seed 0, negatives x5 (inverse leaky ReLU), per-dim mean/std",
})
if args.template:
    extras["crop_template"] = json.loads(Path(args.template).read_text())
extras.update(json.loads(args.extras))
save_generator(G, args.out, gaussian_fit=fit, extras=extras)
print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1e6:.1f} MB)")
