"""Does guidance keep the paper's phenomenon? The quality script's layout rows under other guidance settings.

    python scripts/layout_under_guidance.py --classifier-scales 0,5 --n-guides 32 --cache checkpoints/ig_cache

Repeats the three layout rows of ``python -m saliency_lib.evaluate quality`` (``evaluate.quality_layout_rows``:
Gaussian noise, the paper's recipe and strength 0.3, with the same IG snapshot, fresh noise and sampler seeds, so
the preset's own setting reproduces ``quality.json`` and scale 0 History 12's rows without classifier guidance) for
each classifier-free guidance weight w of ``--weights`` (``preset``: the preset's own), each classifier guidance
scale s of ``--classifier-scales``, and each Restart setting of ``--restarts`` (``none``, ``100-400x2``, ...;
``diffusion.Restart.parse``; model card History 22):

    python scripts/layout_under_guidance.py --classifier-scales 5 --restarts none,100-400x2 --n-guides 8

``--guide-starts`` names blocks of ``--n-guides`` held-out guides, each built exactly as the Quality section builds
its block 0 (the IG cache, the fresh-noise and the sampler seeds are per block); the JSON keeps each block's rows,
each guide's IoU and the block's paired differences from Gaussian noise, and pools the blocks: per setting and noise the IoU over all guides, and per noise each setting's
paired per-guide difference from the first setting, and per setting each crafted noise's from Gaussian noise
(model card History 31):

    python scripts/layout_under_guidance.py --guide-starts 32,0,64,96 --weights 2,4 --classifier-scales 5 \\
        --cache checkpoints/ig_cache --json data/models/tiny/layout_guidance_weight.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from saliency_lib.diffusion import Restart
from saliency_lib.errors import SaliencyNoiseError
from saliency_lib.evaluate import QualityArgs, bootstrap_ci, layout_rows, paired_differences, quality_layout_noises
from saliency_lib.pipeline import Sampler
from saliency_lib.presets import load_tiny
from saliency_lib.weights import atomic_write_bytes


def _numbers(text: str, option: str, cast=float, allow_preset: bool = False) -> list:
    """``"2,4"`` -> ``[2.0, 4.0]`` (each item through ``cast``); ``preset`` (where allowed) -> ``None``, the preset's
    own value. ``option`` names the command-line option in the error."""
    out = []
    for item in text.split(","):
        if allow_preset and item == "preset":
            out.append(None)
            continue
        try:
            out.append(cast(item))
        except ValueError:
            raise SaliencyNoiseError(f"{option}: {item!r} is not a number"
                                     + (" (or 'preset')" if allow_preset else "")) from None
    return out


def pooled(blocks: list[dict]) -> dict:
    """Each setting's rows pooled over the blocks: per noise the IoU mean and 95% bootstrap interval over every
    guide and the target-class accuracy (mean over blocks of equal size); per setting each crafted noise's per-guide
    difference from Gaussian noise, and per noise each setting's from the first setting
    (:func:`evaluate.paired_differences`: mean difference, 95% bootstrap interval, guides better and worse)."""
    settings = list(blocks[0]["settings"])
    per_guide = {s: {n: np.concatenate([b["settings"][s][n]["per_guide_iou"] for b in blocks])
                     for n in blocks[0]["settings"][s]} for s in settings}
    out: dict = {"guides": [b["guide_start"] for b in blocks], "settings": {}, "paired_against_first_setting": {}}
    for s in settings:
        out["settings"][s] = {n: {"layout_iou": list(bootstrap_ci(v)), "class_accuracy": float(np.mean(
            [b["settings"][s][n]["class_accuracy"] for b in blocks]))} for n, v in per_guide[s].items()}
    out["paired_against_gaussian"] = {s: {n: paired_differences({n: v, "gaussian": per_guide[s]["gaussian"]}, n)[
        "gaussian"] for n, v in per_guide[s].items() if n != "gaussian"} for s in settings}
    for n in per_guide[settings[0]]:
        by_setting = {s: per_guide[s][n] for s in settings}
        out["paired_against_first_setting"][n] = {
            s: d for s, d in ((s, paired_differences(by_setting, s)[settings[0]]) for s in settings[1:])}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default="preset", help="comma-separated classifier-free guidance weights w, or "
                   "'preset' for the preset's own (default)")
    p.add_argument("--classifier-scales", default="0,5")
    p.add_argument("--restarts", default="none", help="comma-separated Restart settings, e.g. none,100-400x2")
    p.add_argument("--guide-starts", default="0", help="comma-separated first guides of the blocks (the Quality "
                   "rows are block 0)")
    p.add_argument("--n-guides", type=int, default=32, help="guides per block")
    p.add_argument("--ig-steps", type=int, default=1000)
    p.add_argument("--ddim-steps", type=int, default=50, help="DDIM steps (50: the Quality rows)")
    p.add_argument("--strength", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", type=Path, default=None, help="IG cache folder (as for evaluate quality)")
    p.add_argument("--json", type=Path, default=None, help="written after every block (atomically)")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    try:
        weights = _numbers(a.weights, "--weights", allow_preset=True)
        scales = _numbers(a.classifier_scales, "--classifier-scales")
        starts = _numbers(a.guide_starts, "--guide-starts", cast=int)
        restarts = {text: Restart.parse(text) for text in a.restarts.split(",")}
        samplers = {s.label: s for s in (Sampler("ddim", a.ddim_steps, guidance=w, classifier_scale=c, restarts=r)
                                         for w in weights for c in scales for r in restarts.values())}
    except SaliencyNoiseError as err:
        p.error(str(err))
    if a.n_guides < 2 or min(starts) < 0 or len(set(starts)) < len(starts):
        p.error(f"need --n-guides >= 2 and distinct --guide-starts >= 0, got {a.n_guides} and {a.guide_starts}")
    torch.set_num_threads(a.threads)
    preset = load_tiny()
    args = QualityArgs(n_guides=a.n_guides, ig_steps=a.ig_steps, strength=a.strength, seed=a.seed)
    t0, blocks = time.time(), []
    for start in starts:
        t_block = time.time()
        guides, noises = quality_layout_noises(preset, args, a.cache, start=start)   # once for every setting
        where = f"guides {start}-{start + a.n_guides - 1}"
        block = {"guide_start": start, "settings": {label: layout_rows(preset, guides, noises, sampler, a.seed, where)
                                                    for label, sampler in samplers.items()}}
        block["paired_against_gaussian"] = pooled([block])["paired_against_gaussian"]
        block["seconds"] = time.time() - t_block
        blocks.append(block)
        out = {"args": {k: str(v) for k, v in vars(a).items()},
               "preset_guidance": {"guidance_weight": preset.guidance_weight,
                                   "classifier_scale": preset.classifier_scale},
               "blocks": blocks, "pooled": pooled(blocks), "seconds": time.time() - t0}
        for noise, d in out["pooled"]["paired_against_first_setting"].items():
            for label, diff in d.items():
                m, lo, hi = diff["mean_difference_ci95"]
                print(f"pooled over {len(blocks) * a.n_guides} guides, {noise}: ({label}) minus "
                      f"({list(samplers)[0]}) = {m:+.3f} [{lo:+.3f}, {hi:+.3f}]", flush=True)
        if a.json:
            atomic_write_bytes(a.json, (json.dumps(out, indent=1) + "\n").encode())


if __name__ == "__main__":
    main()
