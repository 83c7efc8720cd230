"""Benchmark: CPU speed of sampling and Inverting Gradients, each default path next to its variants, in one run.

    python scripts/bench_speed.py --json runs/bench_speed.json            # about 6 minutes on 2 cores (--passes 1: 4)
    python scripts/bench_speed.py --quick                                 # small sizes (seconds; tests)

Cases, all on the tiny preset with its defaults (chain of experts, classifier-free guidance w = 2 on a doubled
batch, classifier guidance s = 5):

- ``sampling``: DDIM-50 of ``--images`` images from one x_T batch;
- ``redraw``: the generation explorer's redraw (4 images, DDIM-20), median of ``--repeats``;
- ``ig``: Inverting Gradients against the preset's IG classifier for 1 and for 8 guides: the package's batched
  loop (``torch.func`` per-sample gradients, one pass for all guides) against a per-guide loop written as the
  reference implementation writes it (``torch.autograd.grad(..., create_graph=True)``, one guide at a time);
- ``profile``: where one sampling step and one IG step spend their time (the top operators, ``torch.profiler``);
- ``unet``: achieved GFLOP/s of one UNet forward (FLOPs counted by ``torch.utils.flop_counter``) against the
  float32 matmul rate this machine reaches (a 1024 x 1024 sgemm), as a share of that peak.

Variants are timed on the same inputs, alternating with the default where they repeat, and each reports its
ratio to the default (> 1: faster) and the largest absolute difference of its output from the default's. The JSON
records the CPU model, threads and torch version.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from saliency_lib.inversion import IGConfig, invert_gradients, total_variation
from saliency_lib.machine import cpu_description
from saliency_lib.pipeline import Sampler, craft_noise, generate, guides_for
from saliency_lib.presets import REPO_DATA, load_tiny
from saliency_lib.weights import atomic_write_bytes
from saliency_lib.widgets import ExplorerState, render_generation


def seconds(fn: Callable[[], object], repeats: int = 1) -> tuple[float, object]:
    """Median wall seconds of ``repeats`` calls of ``fn`` and its last result."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


@contextmanager
def channels_last(preset):
    """The preset's UNets and noise-aware classifier in channels_last memory format, restored after."""
    modules = [m for m in (preset.unet, preset.noisy_classifier) if m is not None]
    for m in modules:
        m.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        for m in modules:
            m.to(memory_format=torch.contiguous_format)


def top_ops(fn: Callable[[], object], n: int = 8) -> list[dict]:
    """Where the time of one call of ``fn`` goes: the ``n`` torch operators with the most self CPU time, with their
    share of the total (``torch.profiler``)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    return [{"op": e.key, "share": e.self_cpu_time_total / total, "calls": e.count} for e in events[:n]]


def matmul_gflops(n: int = 1024, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t, _ = seconds(lambda: a @ b, repeats)
    return 2 * n ** 3 / t / 1e9


def unet_rate(preset, batch: int, repeats: int) -> dict:
    """FLOPs and achieved GFLOP/s of one forward of the base UNet at ``batch`` images (no guidance wrappers)."""
    unet = preset.unet_bands()[0][0]
    x = torch.randn(batch, 3, preset.image_size, preset.image_size, generator=torch.Generator().manual_seed(0))
    t, y = torch.full((batch,), 500), torch.zeros(batch, dtype=torch.long)
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            unet(x, t, y=y)
        flops = counter.get_total_flops()
        unet(x, t, y=y)
        sec, _ = seconds(lambda: unet(x, t, y=y), repeats)
    return {"batch": batch, "gflop": flops / 1e9, "seconds": sec, "gflops_per_s": flops / sec / 1e9}


def reference_ig(model, x_star: torch.Tensor, y: torch.Tensor, init: torch.Tensor, cfg: IGConfig, steps: int,
                 norm) -> torch.Tensor:
    """IG written as the reference implementation writes it: per guide, the parameter gradients of the trial image
    by ``torch.autograd.grad(create_graph=True)``, 1 - cosine + TV, signed Adam, the pixel box."""
    params = [p for p in model.parameters()]
    lo, hi = norm.box(x_star)
    out = []
    for b in range(x_star.shape[0]):
        target = [g.detach() for g in torch.autograd.grad(F.cross_entropy(model(x_star[b:b + 1]), y[b:b + 1]), params)]
        x = init[b:b + 1].clone().requires_grad_(True)
        opt = torch.optim.Adam([x], lr=cfg.lr)
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            grads = torch.autograd.grad(F.cross_entropy(model(x), y[b:b + 1]), params, create_graph=True)
            dot = sum((g * t).sum() for g, t in zip(grads, target))
            n1 = sum(g.pow(2).sum() for g in grads).sqrt()
            n2 = sum(t.pow(2).sum() for t in target).sqrt()
            loss = 1 - dot / (n1 * n2) + cfg.tv_weight * total_variation(x).sum()
            (x.grad,) = torch.autograd.grad(loss, x)
            x.grad.sign_()
            opt.step()
            with torch.no_grad():
                x.data = torch.maximum(torch.minimum(x, hi), lo)
        out.append(x.detach())
    return torch.cat(out)


def ig_case(preset, n_guides: int, steps: int, passes: int) -> dict:
    model = preset.classifier.eval()
    norm = preset.normalization
    g = guides_for(preset, n_guides)
    x_star = norm.from_diffusion(g.images)
    init = torch.randn(x_star.shape, generator=torch.Generator().manual_seed(0))
    cfg = IGConfig(iterations=steps, snapshots=(steps,), lr_decay=False)
    batched_t, ref_t = [], []
    for _ in range(passes):   # alternate, so that a slow phase of the machine does not favour one
        t, (res, _) = seconds(lambda: invert_gradients(model, x_star, g.labels, norm, cfg, init=init))
        batched_t.append(t)
        t, ref = seconds(lambda: reference_ig(model, x_star, g.labels, init, cfg, steps, norm))
        ref_t.append(t)
    tb, tr = statistics.median(batched_t), statistics.median(ref_t)
    return {"guides": n_guides, "steps": steps, "batched_s_per_step": tb / steps, "reference_s_per_step": tr / steps,
            "throughput_ratio": tr / tb, "time_ratio_vs_reference": tb / tr,
            "max_abs_diff": (res.snapshots[steps] - ref).abs().max().item()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--images", type=int, default=64, help="images of the sampling case")
    p.add_argument("--repeats", type=int, default=5, help="repeats of the redraw and UNet cases")
    p.add_argument("--ig-steps", type=int, default=20)
    p.add_argument("--passes", type=int, default=2, help="alternating passes of the IG and sampling variants")
    p.add_argument("--quick", action="store_true", help="small sizes (for tests)")
    p.add_argument("--bf16", choices=("auto", "yes", "no"), default="auto",
                   help="time the bfloat16 option: auto = only on a CPU with AVX512-BF16 or AMX-BF16 (elsewhere it is "
                        "emulated and many times slower)")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    if a.quick:
        a.images, a.repeats, a.ig_steps, a.passes = 4, 1, 2, 1
    torch.set_num_threads(a.threads)
    preset = load_tiny()
    cpu = cpu_description()
    with_bf16 = a.bf16 == "yes" or (a.bf16 == "auto" and (cpu["avx512_bf16"] or cpu["amx_bf16"]))
    out: dict = {"cpu": cpu, "threads": a.threads, "torch": torch.__version__, "bfloat16_timed": with_bf16, "cases": {}}
    if not with_bf16:
        print(f"bfloat16 option not timed: {cpu['model_name'] or 'this CPU'} has no bfloat16 instructions "
              "(--bf16 yes times it anyway)", flush=True)

    x_T = torch.randn(a.images, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y = torch.arange(a.images) % len(preset.class_names)
    sampler = Sampler("ddim", 5 if a.quick else 50)
    bf16 = dataclasses.replace(sampler, precision="bfloat16")
    runs: dict[str, list[float]] = {"default": [], "channels_last": [], **({"bfloat16 (option)": []} if with_bf16 else {})}
    images = {}
    for _ in range(a.passes):
        t, images["default"] = seconds(lambda: generate(preset, x_T, y, sampler))
        runs["default"].append(t)
        with channels_last(preset):
            t, images["channels_last"] = seconds(lambda: generate(preset, x_T.contiguous(memory_format=torch.channels_last),
                                                                  y, sampler))
        runs["channels_last"].append(t)
        if with_bf16:
            t, images["bfloat16 (option)"] = seconds(lambda: generate(preset, x_T, y, bf16))
            runs["bfloat16 (option)"].append(t)
    base = statistics.median(runs["default"])
    out["cases"]["sampling"] = {
        name: {"seconds": statistics.median(ts), "seconds_per_image": statistics.median(ts) / a.images,
               "speedup": base / statistics.median(ts),
               "max_abs_diff": (images[name] - images["default"]).abs().max().item()}
        for name, ts in runs.items()}
    print(f"sampling {a.images} images, {sampler.label}: " + ", ".join(
        f"{k} {v['seconds']:.1f} s (x{v['speedup']:.2f}, max diff {v['max_abs_diff']:.1e})"
        for k, v in out["cases"]["sampling"].items()), flush=True)

    g = guides_for(preset, 4)
    fresh = torch.randn(g.images.shape, generator=torch.Generator().manual_seed(1))
    crafted = craft_noise(preset, g.images, g.labels, steps=[0, 100, 300, 1000], seed=0,
                          cache_dir=REPO_DATA / "ig_cache")     # notebook 03's run, shipped
    out["cases"]["redraw"] = {"goal_s": 0.5}
    redraws = {"default": Sampler("ddim", 20)}
    if with_bf16:
        redraws["bfloat16 (option)"] = Sampler("ddim", 20, precision="bfloat16")
    for name, s20 in redraws.items():
        state = ExplorerState(preset, crafted, fresh, sampler=s20)
        render_generation(state, 1000, "fish", 0.3)
        t, _ = seconds(lambda: render_generation(state, 1000, "fish", 0.3), a.repeats)
        out["cases"]["redraw"][name] = t
        print(f"explorer redraw (4 images, DDIM-20), {name}: {t:.2f} s (goal 0.5 s)", flush=True)

    for n in (1, 8):
        r = out["cases"][f"ig_{n}"] = ig_case(preset, n, a.ig_steps, a.passes)
        print(f"IG, {n} guide(s), {r['steps']} steps: batched {r['batched_s_per_step']:.3f} s/step, reference loop "
              f"{r['reference_s_per_step']:.3f} s/step: throughput x{r['throughput_ratio']:.2f}, time "
              f"x{r['time_ratio_vs_reference']:.2f} of the reference (max diff {r['max_abs_diff']:.1e})", flush=True)

    one_step = Sampler("ddim", 2)      # two sampling steps of the redraw (4 images, the preset's guidance)
    x4 = x_T[:4] if a.images >= 4 else torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out["profile"] = {
        "sampling_steps": top_ops(lambda: generate(preset, x4, torch.arange(4) % len(preset.class_names), one_step)),
        "ig_step_8_guides": top_ops(lambda: invert_gradients(
            preset.classifier, preset.normalization.from_diffusion(guides_for(preset, 8).images),
            guides_for(preset, 8).labels, preset.normalization, IGConfig(iterations=1, snapshots=(1,)),
            generator=torch.Generator().manual_seed(0)))}
    for name, ops in out["profile"].items():
        print(f"profile of one {name.replace('_', ' ')}: " + ", ".join(
            f"{o['op']} {100 * o['share']:.0f}%" for o in ops[:5]), flush=True)

    peak = matmul_gflops()
    rate = unet_rate(preset, 8, a.repeats)
    rate.update(matmul_peak_gflops_per_s=peak, share_of_peak=rate["gflops_per_s"] / peak)
    out["cases"]["unet"] = rate
    print(f"UNet forward, batch 8: {rate['gflop']:.2f} GFLOP in {rate['seconds'] * 1e3:.0f} ms = "
          f"{rate['gflops_per_s']:.1f} GFLOP/s, {100 * rate['share_of_peak']:.0f}% of the sgemm rate "
          f"({peak:.0f} GFLOP/s)", flush=True)
    if a.json:
        atomic_write_bytes(a.json, json.dumps(out, indent=2).encode())
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
