"""Craft the noise of a folder of guide images into the IG cache, on one process or many (torchrun).

    python -m saliency_lib.craft photos/ --labels labels.json --steps 0,100,1000 --cache runs/ig_cache
    python -m saliency_lib.craft photos/ --classifier efficientnet-lite0 --labels given --size 128
    torchrun --nproc-per-node 2 -m saliency_lib.craft photos/ --labels predicted --cache /shared/ig_cache

The images (sorted by file name) are cut into chunks of ``--chunk`` guides; each chunk is one batched Inverting
Gradients run (Alg. 1 lines 1-2), seeded ``--seed`` + its chunk index, cached under a key of its guides, labels,
settings and classifier (:func:`~saliency_lib.inversion.cached_invert_gradients`; atomic writes). Under torchrun the
chunks are dealt to the ranks round-robin: a chunk is computed exactly as in a single process whatever the number
of processes, no two ranks write one entry, and rank 0 prints the report and writes ``--report``. Notebooks and
:func:`~saliency_lib.pipeline.craft_noise` then find the runs in the cache (same chunks, seeds and settings).

Labels: ``--labels FILE.json`` maps file names to class names or ids; ``given`` takes the bundled photos' labels
(``efficientnet-lite0`` only); ``predicted`` the classifier's top-1; ``none`` leaves them to IG's label recovery.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .distributed import Ranks, finish, init_from_env, merge_by_unit, run_and_gather, shard
from .errors import SaliencyNoiseError, check_writable_dir
from .inversion import IGConfig
from .photos import MIN_SIDE, load_photo_classifier, read_photo
from .pipeline import craft_noise, target_labels
from .presets import load_preset
from .weights import atomic_write_bytes

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class CraftArgs:
    steps: tuple[int, ...] = (0, 100, 1000)   # IG snapshots k (the run lasts max(steps) iterations)
    chunk: int = 8                            # guides per batched IG run (fixed: it is part of what is computed)
    seed: int = 0                             # chunk c's IG init is randn from seed + c
    size: int | None = None                   # image size (None: the preset's resolution; 128 for efficientnet-lite0)
    classifier: str = "preset"                # "preset" (its IG classifier) or "efficientnet-lite0" (photos)


def guide_files(source: Path) -> list[Path]:
    """The image files of a folder (sorted by name), or the one file given."""
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise SaliencyNoiseError(f"guides {str(source)!r}: no such folder or file")
    files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SaliencyNoiseError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {str(source)!r}")
    return files


def read_labels(spec: str, files: list[Path]) -> list | str | None:
    """``--labels``: a JSON file (file name -> class name or id, every file listed), or given/predicted/none."""
    if spec in ("given", "predicted"):
        return spec
    if spec == "none":
        return None
    path = Path(spec)
    if not path.is_file():
        raise SaliencyNoiseError(f"--labels {spec!r}: expected a JSON file mapping file names to classes, or one of "
                                 "given, predicted, none")
    try:
        mapping = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise SaliencyNoiseError(f"--labels {spec!r} is not valid JSON ({err})") from None
    missing = [f.name for f in files if f.name not in mapping]
    if not isinstance(mapping, dict) or missing:
        raise SaliencyNoiseError(f"--labels {spec!r} must map every guide's file name to its class; missing: "
                                 f"{missing[:5]}")
    return [mapping[f.name] for f in files]


def craft_chunk(preset, classifier, files: list[Path], labels, args: CraftArgs, index: int,
                cache_dir: Path | None) -> dict:
    """IG of one chunk of guide files -> its report (files, labels, objective, cached, seconds)."""
    t0 = time.perf_counter()
    photo = classifier is not None
    size = args.size or (128 if photo else preset.image_size)
    images = torch.stack([read_photo(f, size, colour_photo=photo) for f in files])
    names = classifier.class_names if photo else preset.class_names
    if labels == "predicted":
        model = classifier if photo else preset.classifier
        norm = model.config.normalization if photo else preset.normalization
        with torch.no_grad():
            y = model(norm.from_diffusion(images.to(next(model.parameters()).device))).argmax(1).cpu()
    elif labels is None:
        y = None
    elif photo:
        y = torch.tensor([v if isinstance(v, int) else classifier.class_names.index(v) for v in labels])
    else:
        y = target_labels(preset, list(labels), len(files))
    ig = IGConfig(iterations=max(args.steps)) if photo else None
    crafted = craft_noise(preset, images, y, steps=args.steps, seed=args.seed + index, ig=ig, cache_dir=cache_dir,
                          classifier=classifier)
    loss = crafted.stats["loss"]
    return {"chunk": index, "files": [f.name for f in files], "seed": args.seed + index, "image_size": size,
            "labels": [names[i] for i in crafted.stats["labels"].tolist()], "label_source": labels if isinstance(
                labels, str) else ("recovered" if labels is None else "file"),
            "objective_start": loss[0].tolist() if len(loss) else None,
            "objective_end": loss[-1].tolist() if len(loss) else None,
            "cached": bool(crafted.stats["cached"]), "seconds": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m saliency_lib.craft", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("guides", type=Path, help="a folder of guide images (or one image file)")
    p.add_argument("--labels", default="none", help="JSON file (file name -> class), given, predicted or none")
    p.add_argument("--steps", default="0,100,1000", help="IG snapshots k, comma-separated")
    p.add_argument("--chunk", type=int, default=CraftArgs.chunk, help="guides per batched IG run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=None, help="image size (default: the classifier's)")
    p.add_argument("--classifier", default="preset", choices=["preset", "efficientnet-lite0"])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--device", default="cpu", help="cpu or cuda (under torchrun: each rank its LOCAL_RANK's GPU)")
    p.add_argument("--cache", type=Path, default=None, help="IG cache folder (shared by all ranks)")
    p.add_argument("--report", type=Path, default=None, help="write the report (JSON) here")
    p.add_argument("--threads", type=int, default=None, help="torch threads per process")
    a = p.parse_args(argv)
    try:
        steps = tuple(sorted({int(s) for s in a.steps.split(",")}))
        args = CraftArgs(steps=steps, chunk=a.chunk, seed=a.seed, size=a.size, classifier=a.classifier)
        if args.chunk < 1 or min(steps) < 0:
            raise SaliencyNoiseError(f"--chunk must be >= 1 and --steps >= 0, got {a.chunk} and {a.steps}")
        files = guide_files(a.guides)
        for f in files:   # every file readable before any rank starts IG (cheap; errors name the file)
            read_photo(f, MIN_SIDE, colour_photo=args.classifier == "efficientnet-lite0")
        labels = read_labels(a.labels, files)
        if labels == "given" and args.classifier != "efficientnet-lite0":
            raise SaliencyNoiseError("--labels given: only the bundled photos have given labels (efficientnet-lite0)")
        if a.cache is not None:
            check_writable_dir(a.cache, "--cache")
        if a.report is not None:
            check_writable_dir(a.report.parent, "the folder of --report")
    except (SaliencyNoiseError, ValueError) as err:
        p.error(str(err))
    if a.threads:
        torch.set_num_threads(a.threads)
    ranks = init_from_env(a.device)
    device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if a.device == "cuda" and ranks.distributed else a.device
    report = craft(a.preset, device, files, labels, args, a.cache, ranks)
    if ranks.is_main:
        print_report(report)
        if a.report is not None:
            atomic_write_bytes(a.report, json.dumps(report, indent=2).encode())
            print(f"wrote {a.report}")
    finish(ranks)


def craft(preset_name: str, device: str, files: list[Path], labels, args: CraftArgs, cache_dir: Path | None,
          ranks: Ranks = Ranks()) -> dict | None:
    """Craft every chunk of ``files`` (this rank's share under torchrun); the report on rank 0, None elsewhere."""
    preset = load_preset(preset_name, device)
    classifier = load_photo_classifier("trained", device=device) if args.classifier == "efficientnet-lite0" else None
    chunks = [files[i:i + args.chunk] for i in range(0, len(files), args.chunk)]
    per_chunk = [labels if labels is None or isinstance(labels, str) else labels[i:i + args.chunk]
                 for i in range(0, len(files), args.chunk)]
    t0 = time.perf_counter()
    gathered = run_and_gather(lambda: [(c, craft_chunk(preset, classifier, chunks[c], per_chunk[c], args, c,
                                                       cache_dir)) for c in shard(len(chunks), ranks)], ranks)
    if gathered is None:
        return None
    return {"args": {**args.__dict__, "steps": list(args.steps)}, "preset": preset_name,
            "processes": ranks.world_size, "seconds": time.perf_counter() - t0, "chunks": merge_by_unit(gathered)}


def print_report(report: dict) -> None:
    chunks = report["chunks"]
    n = sum(len(c["files"]) for c in chunks)
    print(f"crafted {n} guides in {len(chunks)} chunks on {report['processes']} process(es) in "
          f"{report['seconds']:.1f} s ({sum(c['cached'] for c in chunks)} chunks from the cache)")
    for c in chunks:
        end = c["objective_end"]
        objective = f"{sum(end) / len(end):.3f}" if end else "-"
        how = "from the cache" if c["cached"] else f"{c['seconds']:.1f} s"
        print(f"  chunk {c['chunk']:3d}: {len(c['files'])} guides from {c['files'][0]}, objective at the end "
              f"{objective}, {how}")


if __name__ == "__main__":
    main()
