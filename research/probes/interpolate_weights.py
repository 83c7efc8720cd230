"""Weight-space interpolation of two fine-tunes of one network (WiSE-FT, Wortsman et al. 2022; model card, History 21):
theta = (1 - alpha) * theta_A + alpha * theta_B, tensor by tensor.

    python scripts/interpolate_weights.py data/models/tiny/ddpm.safetensors data/models/tiny/ddpm_low_noise.safetensors \
        --alpha 0.5 --out /tmp/expert_soup_0.5.safetensors

A and B must hold the same tensors (names, shapes) and the same ``config_class``/``config`` (e.g. the base DDPM and
the low-noise expert fine-tuned from it); the output keeps B's metadata and records the interpolation.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from saliency_lib.weights import interpolate_tensors, load_tensors, save_tensors


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument("--alpha", type=float, required=True, help="0: A, 1: B")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    (ta, ma), (tb, mb) = load_tensors(args.a), load_tensors(args.b)
    for key in ("config_class", "config"):
        if ma.get(key) != mb.get(key):
            p.error(f"{args.a} and {args.b} differ in {key}: not two fine-tunes of one network")
    meta = {**mb, "interpolated": json.dumps({"a": str(args.a), "b": str(args.b), "alpha": args.alpha})}
    save_tensors(args.out, interpolate_tensors(ta, tb, args.alpha), meta)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
