"""Print the README's results tables (Markdown) from an evaluation run's results.json.

    python scripts/results_table.py results/tiny/results.json
"""

from __future__ import annotations

import json
import sys

from saliency_lib.report import paper_claims


def ci(v: list[float], digits: int = 3) -> str:
    return f"{v[0]:.{digits}f} [{v[1]:.{digits}f}, {v[2]:.{digits}f}]"


def main(path: str) -> None:
    res = json.loads(open(path).read())
    a = res["args"]
    w = res.get("guidance_weight", 0.0)
    sc = res.get("classifier_scale", 0.0)
    guided = (f" with classifier-free guidance w={w:g}" if w else "") + (
        f"{' and' if w else ' with'} classifier guidance s_cls={sc:g}" if sc else "")
    print(f"{a['n_guides']} held-out guides x {a['classes_per_guide']} target classes each (balanced over the 8 "
          f"classes), DDIM-{a['ddim_steps']}{guided}, crafted-noise strength {a['strength']} unless stated; mean [95% "
          f"bootstrap CI over guides]; judge models only. Seconds per image: 2 CPU cores, noise crafting shared "
          f"over its images plus sampling.\n")
    print("| group | condition | layout IoU | target-class accuracy | centroid distance (px) | s / image |")
    print("|---|---|---|---|---|---|")
    for r in res["rows"]:
        if "iou" not in r:
            continue
        sec = "-" if r.get("seconds_per_image") is None else f"{r['seconds_per_image']:.2f}"
        print(f"| {r['group']} | {r['condition']} | {ci(r['iou'])} | {ci(r['class_accuracy'])} | "
              f"{ci(r['centroid_dist'], 1)} | {sec} |")
    print("\n| transform of the IG noise | IoU with the transformed guide mask | IoU with the original mask | "
          "transformed beats original |")
    print("|---|---|---|---|")
    for r in res["rows"]:
        if r["group"] == "orientation":
            print(f"| {r['condition']} | {ci(r['iou_transformed'])} | {ci(r['iou_original'])} | "
                  f"{ci(r['follow_rate'], 2)} |")
    print("\n| diversity (DDPM, different sampler seeds) | RMS pixel distance |")
    print("|---|---|")
    for r in res["rows"]:
        if r["group"] == "diversity":
            print(f"| {r['condition']} ({r['seeds']} seeds, {r['n_guides']} guides) | {ci(r['rms_distance'])} |")
    print("\n| the paper's claim, on this preset | verdict |")
    print("|---|---|")
    for claim, holds in paper_claims(res).items():
        print(f"| {claim} | {'**holds**' if holds else 'does not hold'} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "results/tiny/results.json")
