"""Assemble data/models/tiny from training outputs (the model card's Reproduce section gives the commands before it).

    python scripts/build_tiny_preset.py --ddpm checkpoints/gpu_ft/ft2_ema.safetensors --ig-classifier untrained:123 \
        --judge-classifier checkpoints/judge_classifier/model.safetensors \
        --judge-segmenter checkpoints/segmenter/model.safetensors \
        --guidance-weight 2 --noisy-classifier checkpoints/noisy_classifier/model.safetensors --classifier-scale 5 \
        --low-noise-expert checkpoints/expert3_gpu/midb_ema.safetensors --expert-below-t 500 \
        --low-noise-expert checkpoints/expert3_gpu/lowt3b_ema.safetensors --expert-below-t 100 \
        --saliency-classifier checkpoints/resnet_plain/model.safetensors \
        --ig-alternative trained=checkpoints/resnet_plain/model.safetensors \
        --ig-alternative trained_ls0.3=checkpoints/resnet_ls/model.safetensors

builds the shipped preset (``--note`` records why this IG classifier: preset.json's ``note``).
``--low-noise-expert`` adds a DDPM for the low noise levels (the manifest's ``ddpm_low_noise``); repeated, with
decreasing ``--expert-below-t``, a chain of experts (a list in the manifest). ``--saliency-classifier`` is the trained
classifier saliency maps are taken from; ``--ig-alternative NAME=FILE`` a trained classifier the protocol also
inverts. Weights files in ``--out`` that the new preset.json does not name are removed.
``--ig-classifier untrained:SEED`` ships a randomly initialised small ResNet (seeded).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from saliency_lib.classifiers import (
    ClassifierConfig,
    SmallResNet,
    load_classifier,
    load_noisy_classifier,
    load_segmenter,
    save_model,
)
from saliency_lib.errors import SaliencyNoiseError
from saliency_lib.presets import (
    TINY_DIR,
    expert_thresholds,
    load_ddpm_file,
    low_noise_experts,
)
from saliency_lib.training import export_weights
from saliency_lib.weights import atomic_write_bytes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ddpm", type=Path, required=True, help="DDPM training checkpoint (EMA weights are exported)")
    p.add_argument("--ig-classifier", required=True, help="classifier file, or untrained:SEED")
    p.add_argument("--judge-classifier", type=Path, required=True)
    p.add_argument("--judge-segmenter", type=Path, required=True)
    p.add_argument("--out", type=Path, default=TINY_DIR)
    p.add_argument("--note", default="", help="why this IG classifier (stored in preset.json)")
    p.add_argument("--ig-tv-weight", type=float, default=1e-3,
                   help="the preset's IG total-variation weight (IGConfig.tv_weight; see the model card's sweep)")
    p.add_argument("--guidance-weight", type=float, default=0.0,
                   help="the preset's default classifier-free guidance weight w (needs a DDPM with a null class; "
                        "see scripts/sweep_guidance.py)")
    p.add_argument("--noisy-classifier", type=Path, default=None,
                   help="noise-aware classifier for classifier guidance (train noisy-classifier; optional)")
    p.add_argument("--saliency-classifier", type=Path, default=None,
                   help="trained classifier that saliency maps are taken from (train classifier; optional)")
    p.add_argument("--ig-alternative", action="append", default=[], metavar="NAME=FILE",
                   help="a trained classifier the protocol's classifier rows also invert (repeatable; optional)")
    p.add_argument("--classifier-scale", type=float, default=0.0,
                   help="the preset's default classifier guidance scale s (needs --noisy-classifier)")
    p.add_argument("--low-noise-expert", type=Path, action="append", default=[],
                   help="DDPM training checkpoint of a low-noise expert (train ddpm --t-max; EMA exported), used for "
                        "t < --expert-below-t (optional); repeat it, each with its own "
                        "--expert-below-t, decreasing, for a chain of experts")
    p.add_argument("--expert-below-t", type=int, action="append", default=[],
                   help="one per --low-noise-expert, in the same order (default: 500 for a single expert)")
    a = p.parse_args()
    if a.classifier_scale and not a.noisy_classifier:
        raise SystemExit("--classifier-scale > 0 needs --noisy-classifier")
    a.out.mkdir(parents=True, exist_ok=True)
    export_weights(a.ddpm, a.out / "ddpm.safetensors")
    unet, diff_cfg = load_ddpm_file(a.out / "ddpm.safetensors")  # check it loads
    if a.guidance_weight and not unet.config.null_class:
        raise SystemExit("--guidance-weight > 0 needs a DDPM trained with a null class (label dropout)")
    if a.ig_classifier.startswith("untrained:"):
        seed = int(a.ig_classifier.split(":")[1])
        torch.manual_seed(seed)
        save_model(SmallResNet(ClassifierConfig()).eval(), a.out / "ig_classifier.safetensors",
                   {"trained": "no", "init_seed": str(seed)})
    else:
        load_classifier(a.ig_classifier)
        shutil.copyfile(a.ig_classifier, a.out / "ig_classifier.safetensors")
    load_classifier(a.judge_classifier)
    load_segmenter(a.judge_segmenter)
    shutil.copyfile(a.judge_classifier, a.out / "judge_classifier.safetensors")
    shutil.copyfile(a.judge_segmenter, a.out / "judge_segmenter.safetensors")
    extra: dict = {}
    if a.noisy_classifier is not None:
        load_noisy_classifier(a.noisy_classifier)
        shutil.copyfile(a.noisy_classifier, a.out / "noisy_classifier.safetensors")
        extra.update(noisy_classifier="noisy_classifier.safetensors", classifier_scale=a.classifier_scale)
    trained: dict[Path, str] = {}   # source file -> shipped name (one file may serve in both roles)

    def ship_classifier(path: Path, name: str) -> str:
        if path.resolve() not in trained:
            load_classifier(path)
            trained[path.resolve()] = name
            shutil.copyfile(path, a.out / name)
        return trained[path.resolve()]
    alternatives = {}
    for item in a.ig_alternative:
        name, sep, path = item.partition("=")
        if not sep or not name or not path or not all(c.isalnum() or c in "._-" for c in name):
            raise SystemExit(f"--ig-alternative {item!r}: expected NAME=FILE, NAME of letters, digits and ._-")
        alternatives[name] = ship_classifier(Path(path), f"ig_classifier_{name}.safetensors")
    if a.saliency_classifier is not None:
        extra["saliency_classifier"] = ship_classifier(a.saliency_classifier, "saliency_classifier.safetensors")
    if alternatives:
        extra["ig_classifier_alternatives"] = alternatives
    try:
        below_ts = expert_thresholds(len(a.low_noise_expert), a.expert_below_t)
    except SaliencyNoiseError as err:
        raise SystemExit(f"--low-noise-expert / --expert-below-t: {err}")
    experts = []
    for i, (expert, below_t) in enumerate(zip(a.low_noise_expert, below_ts)):
        name = "ddpm_low_noise.safetensors" if i == 0 else f"ddpm_low_noise_{i + 1}.safetensors"
        export_weights(expert, a.out / name)
        unet = low_noise_experts(unet, diff_cfg, a.out / name, below_t)   # they fit together
        experts.append({"file": name, "below_t": below_t})
    if experts:   # one expert: a dict; a chain: the list, applied in order by load_tiny
        extra["ddpm_low_noise"] = experts[0] if len(experts) == 1 else experts
    manifest = {"ddpm": "ddpm.safetensors", "ig_classifier": "ig_classifier.safetensors",
                "ig_classifier_source": a.ig_classifier, "judge_classifier": "judge_classifier.safetensors",
                "judge_segmenter": "judge_segmenter.safetensors", "note": a.note,
                "ig": {"tv_weight": a.ig_tv_weight}, "guidance_weight": a.guidance_weight,
                **extra}
    atomic_write_bytes(a.out / "preset.json", json.dumps(manifest, indent=2).encode())
    shipped = {v for v in manifest.values() if isinstance(v, str) and v.endswith(".safetensors")}
    shipped |= {e["file"] for e in experts}
    shipped |= set(trained.values())
    for stale in sorted(f for f in a.out.glob("*.safetensors") if f.name not in shipped):
        stale.unlink()   # a previous build's optional model, which this manifest does not name
        print(f"removed {stale} (not in this build)")
    total = sum(f.stat().st_size for f in a.out.glob("*.safetensors"))
    print(f"wrote {a.out} ({total / 1e6:.1f} MB of weights)")


if __name__ == "__main__":
    main()
