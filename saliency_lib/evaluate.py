"""The measurement command line: the tiny preset's quality bars, the IG classifier choice, the full protocol.

    python -m saliency_lib.evaluate quality            # the tiny preset's quality bars (model card)
    python -m saliency_lib.evaluate quality --quick    # a small subset (tests)
    python -m saliency_lib.evaluate models             # judge and IG-classifier metrics only (seconds)
    python -m saliency_lib.evaluate ig-classifiers     # compare IG classifiers (model card table)
    python -m saliency_lib.evaluate run                # the full protocol: results/tiny/{results.json,csv,*.png}
    python -m saliency_lib.evaluate run --quick        # the same pipeline at tiny sizes (CI)
    torchrun --nproc-per-node 2 -m saliency_lib.evaluate run   # the chunks of guides shared by 2 processes
    python -m saliency_lib.evaluate photos             # real photos drive the tiny DDPM: results/photos/photos.json

The measurements themselves: :mod:`.metrics` (judge, IoU, statistics), :mod:`.quality` (quality bars, IG classifier
choice), :mod:`.protocol` (the protocol's conditions), :mod:`.photo_protocol` (the photos' conditions) and :mod:`.report` (files, tables, verdicts).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from .classifiers import load_noisy_classifier
from .distributed import finish, init_from_env
from .errors import SaliencyNoiseError, check_writable_dir
from .presets import load_preset
from .photo_protocol import QUICK_PHOTOS, PhotoArgs, run_photo_protocol
from .protocol import QUICK_PROTOCOL, ProtocolArgs, run_protocol
from .quality import (
    QualityArgs,
    candidate_metrics,
    compare_ig_classifiers,
    ig_candidates,
    model_metrics,
    quality,
)
from .report import write_results
from .weights import atomic_write_bytes


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m saliency_lib.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("quality", help="the tiny preset's quality bars")
    q.add_argument("--quick", action="store_true", help="small subset (seconds, for tests)")
    q.add_argument("--json", type=Path, help="write the results here")
    q.add_argument("--cache", type=Path, default=None, help="IG cache folder")
    for f in dataclasses.fields(QualityArgs):
        q.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=None)
    mm = sub.add_parser("models", help="judge and IG-classifier metrics only (seconds)")
    mm.add_argument("--n-test", type=int, default=2048)
    mm.add_argument("--json", type=Path)
    mm.add_argument("--noisy-classifier", type=Path, default=None,
                    help="score this noise-aware classifier's weights (<out>/model.safetensors) instead of the preset's")
    c = sub.add_parser("ig-classifiers", help="compare IG classifiers (trained, label-smoothed, T=4, untrained)")
    c.add_argument("--n-guides", type=int, default=16)
    c.add_argument("--steps", default="300", help="IG snapshot steps k (0, the init, is always scored once)")
    c.add_argument("--strengths", default="1.0,0.3")
    c.add_argument("--cache", type=Path, default=None, help="IG cache folder")
    c.add_argument("--json", type=Path)
    r = sub.add_parser("run", help="the full evaluation protocol (JSON, CSV, plots; notebook 06)")
    r.add_argument("--quick", action="store_true", help="tiny sizes (about a minute, for CI)")
    r.add_argument("--out", type=Path, default=Path("results/tiny"), help="folder for results.json/.csv and plots")
    r.add_argument("--cache", type=Path, default=None,
                   help="IG cache folder; each finished chunk is saved in its protocol/ folder, where a rerun "
                        "resumes")
    for f in dataclasses.fields(ProtocolArgs):
        if f.type in ("int", "float"):
            r.add_argument(f"--{f.name.replace('_', '-')}", type=int if f.type == "int" else float, default=None)
    ph = sub.add_parser("photos", help="real photos drive the tiny DDPM (notebook 02's full table)")
    ph.add_argument("--quick", action="store_true", help="two photos at 64 px, a few steps (for tests)")
    ph.add_argument("--out", type=Path, default=Path("results/photos"), help="folder for photos.json")
    ph.add_argument("--cache", type=Path, default=None, help="IG cache folder")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)
    try:   # destinations first: a run that cannot save its results says so before it starts
        if getattr(a, "out", None) is not None:
            check_writable_dir(a.out, "--out")
        if getattr(a, "json", None) is not None:
            if a.json.is_dir():
                raise SaliencyNoiseError(f"--json {str(a.json)!r} is a folder; give a file name, e.g. results.json")
            check_writable_dir(a.json.parent, "the folder of --json")
        if getattr(a, "cache", None) is not None:
            check_writable_dir(a.cache, "--cache")
    except SaliencyNoiseError as err:
        p.error(str(err))
    if a.threads:
        torch.set_num_threads(a.threads)
    preset = load_preset(a.preset)
    if a.cmd == "quality":
        base = QualityArgs(n_test=128, n_samples=16, n_guides=2, ig_steps=20, ddpm_steps=20) if a.quick else QualityArgs()
        over = {f.name: getattr(a, f.name) for f in dataclasses.fields(QualityArgs) if getattr(a, f.name) is not None}
        res = quality(preset, dataclasses.replace(base, **over), cache_dir=a.cache)
    elif a.cmd == "run":
        base = QUICK_PROTOCOL if a.quick else ProtocolArgs()
        over = {f.name: getattr(a, f.name) for f in dataclasses.fields(ProtocolArgs)
                if getattr(a, f.name, None) is not None}
        ranks = init_from_env()          # under torchrun: this process's rank; a plain run: one process
        res = run_protocol(preset, dataclasses.replace(base, **over), cache_dir=a.cache,
                           log=print if ranks.is_main else (lambda _: None), ranks=ranks,
                           checkpoint_dir=a.cache / "protocol" if a.cache is not None else None)
        if ranks.is_main:
            for path in write_results(res, a.out):
                print(f"wrote {path}")
        finish(ranks)
        return
    elif a.cmd == "photos":
        res = run_photo_protocol(preset, QUICK_PHOTOS if a.quick else PhotoArgs(), cache_dir=a.cache, progress=True)
        atomic_write_bytes(a.out / "photos.json", json.dumps(res, indent=2).encode())
        print(f"wrote {a.out / 'photos.json'}")
    elif a.cmd == "models":
        if a.noisy_classifier is not None:
            preset = dataclasses.replace(preset, noisy_classifier=load_noisy_classifier(a.noisy_classifier))
        res = model_metrics(preset, a.n_test)
        res["ig_candidates"] = candidate_metrics(ig_candidates(preset), a.n_test)
    else:
        res = compare_ig_classifiers(preset, ig_candidates(preset), a.n_guides,
                                     [int(k) for k in a.steps.split(",")],
                                     [float(s) for s in a.strengths.split(",")], cache_dir=a.cache)
    if getattr(a, "json", None):
        atomic_write_bytes(a.json, json.dumps(res, indent=2).encode())


if __name__ == "__main__":
    main()
