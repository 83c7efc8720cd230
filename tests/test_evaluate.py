import dataclasses
import json

import numpy as np
import pytest
import torch

from saliency_lib import data
from saliency_lib.classifiers import ClassifierConfig, PlainCNN
from saliency_lib.errors import SaliencyNoiseError
from saliency_lib.metrics import (
    bootstrap_ci,
    centroid_distance,
    mask_iou,
    per_class_accuracy,
)
from saliency_lib.presets import load_tiny
from saliency_lib.realism import (
    _polynomial_mmd2,
    background_stats,
    classifier_embeddings,
    judge_embeddings,
    kernel_distance,
)


def test_mask_iou_and_centroids():
    a = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    b = torch.zeros_like(a)
    a[0, 0, :4, :4] = True
    b[0, 0, :4, :2] = True
    a[1, 0, 0, 0] = True
    b[1, 0, 7, 7] = True
    iou = mask_iou(a, b)
    assert iou.tolist() == [0.5, 0.0]
    assert mask_iou(torch.zeros_like(a), torch.zeros_like(a)).tolist() == [1.0, 1.0]
    d = centroid_distance(a, b)
    assert abs(d[0].item() - 1.0) < 1e-6 and abs(d[1].item() - 7 * 2 ** 0.5) < 1e-5


def test_bootstrap_ci_covers_mean_and_shrinks():
    rng = np.random.default_rng(0)
    small = rng.normal(0.5, 0.1, 16)
    big = rng.normal(0.5, 0.1, 1024)
    m, lo, hi = bootstrap_ci(small)
    assert lo < m < hi
    _, lo2, hi2 = bootstrap_ci(big)
    assert hi2 - lo2 < hi - lo
    assert bootstrap_ci(small, seed=1) != bootstrap_ci(small, seed=2)
    assert bootstrap_ci(small, seed=1) == bootstrap_ci(small, seed=1)


def test_per_class_accuracy_averages_classes():
    probs = torch.eye(2)[[0, 0, 0, 1]]
    target = torch.tensor([0, 0, 0, 0])
    assert per_class_accuracy(probs, target, 2) == 0.75
    target = torch.tensor([0, 0, 0, 1])
    assert per_class_accuracy(probs, target, 2) == 1.0


def test_assignments_balance_classes():
    from saliency_lib.protocol import assignments
    gi, y = assignments(8, 2, 8)
    assert gi.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7]
    assert torch.bincount(y, minlength=8).tolist() == [2] * 8
    with pytest.raises(SaliencyNoiseError, match="classes_per_guide"):
        assignments(4, 9, 8)


def same(a, b) -> bool:
    """Equal as JSON (NaN equals NaN)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def untimed(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds_per_image"} for r in rows]


def test_protocol_quick_pipeline_and_metric_sanity(tmp_path):
    """`evaluate run --quick`: every group is present, metrics are in range, CIs bracket the means, Gaussian
    noise is near chance and SDEdit from t0 = 0.5 (which keeps the guide) is far above it."""
    from saliency_lib.protocol import QUICK_PROTOCOL, chunk_checkpoint, run_protocol
    from saliency_lib.report import paper_claims, write_results
    preset = load_tiny()
    res = run_protocol(preset, QUICK_PROTOCOL, cache_dir=tmp_path / "cache", log=lambda _: None)
    groups = {r["group"] for r in res["rows"]}
    expected = {"source", "k", "strength", "orientation", "sampler", "diversity", "classifier"}
    assert groups == expected | ({"guidance"} if preset.guidance_weight else set())
    assert res["guidance_weight"] == preset.guidance_weight
    off = "w=0" + (", s_cls=0" if preset.classifier_scale else "")   # every guidance the preset uses, off
    assert all(r["sampler"].endswith(off) for r in res["rows"] if r["group"] == "guidance")
    for r in res["rows"]:
        for key in ("iou", "class_accuracy", "iou_transformed", "iou_original", "follow_rate"):
            if key in r:
                mean, lo, hi = r[key]
                assert 0 <= lo <= mean <= hi <= 1, (r["condition"], key, r[key])
        if "seconds_per_image" in r:
            assert r["seconds_per_image"] > 0   # fresh IG runs: every cost is known
    claims = paper_claims(res)
    assert len(claims) >= 6 and all(isinstance(v, bool) for v in claims.values())
    by = {r["condition"]: r for r in res["rows"] if r["group"] == "source"}
    assert by["Gaussian"]["iou"][0] < 0.25
    assert by["SDEdit t0=0.5"]["iou"][0] > by["Gaussian"]["iou"][0] + 0.2
    assert {r["condition"] for r in res["rows"] if r["group"] == "classifier"} >= {"untrained"}
    paths = write_results(res, tmp_path / "out")
    assert [p.name for p in paths] == ["results.json", "results.csv", "iou_vs_k.png", "iou_vs_class_accuracy.png",
                                       "iou_vs_time.png"]
    assert (tmp_path / "out" / "results.csv").read_text().count("\n") == len(res["rows"]) + 1


    # without checkpoint_dir nothing is checkpointed; with it, a rerun reads every chunk's checkpoint; an unreadable
    # one is recomputed, to the same rows
    assert not any(p.suffix == ".json" for p in tmp_path.rglob("*chunk*"))
    logged: list[str] = []
    ck = tmp_path / "checkpoints"
    first = run_protocol(preset, QUICK_PROTOCOL, cache_dir=tmp_path / "cache", log=lambda _: None, checkpoint_dir=ck)
    assert same(untimed(first["rows"]), untimed(res["rows"]))      # IG from the cache, rows as before
    again = run_protocol(preset, QUICK_PROTOCOL, cache_dir=tmp_path / "cache", log=logged.append, checkpoint_dir=ck)
    n_chunks = -(-QUICK_PROTOCOL.n_guides // QUICK_PROTOCOL.chunk_guides)
    assert sum("read from its checkpoint" in m for m in logged) == n_chunks
    assert same(again["rows"], first["rows"])
    checkpoints = sorted(ck.glob("*-chunk*.json"))
    assert len(checkpoints) == n_chunks
    checkpoints[0].write_text("{not json")
    logged.clear()
    third = run_protocol(preset, QUICK_PROTOCOL, cache_dir=tmp_path / "cache", log=logged.append, checkpoint_dir=ck)
    assert any("unreadable" in m for m in logged)
    assert sum("read from its checkpoint" in m for m in logged) == n_chunks - 1
    assert same(untimed(third["rows"]), untimed(res["rows"]))
    assert json.loads(checkpoints[0].read_text())["rows"]                 # rewritten
    other = dataclasses.replace(QUICK_PROTOCOL, seed=1)
    assert chunk_checkpoint(preset, other, 0, tmp_path) != chunk_checkpoint(preset, QUICK_PROTOCOL, 0, tmp_path)


def test_gaussian_class_batch_is_seeded_and_class_balanced():
    from types import SimpleNamespace

    from saliency_lib.quality import gaussian_class_batch

    preset = SimpleNamespace(image_size=8, class_names=("a", "b", "c"))
    x_T, y = gaussian_class_batch(preset, 7, seed=5)
    assert x_T.shape == (7, 3, 8, 8) and y.tolist() == [0, 1, 2, 0, 1, 2, 0]
    again, _ = gaussian_class_batch(preset, 7, seed=5)
    other, _ = gaussian_class_batch(preset, 7, seed=6)
    assert torch.equal(x_T, again) and not torch.equal(x_T, other)
    with pytest.raises(SaliencyNoiseError, match="at least one sample"):
        gaussian_class_batch(preset, 0, seed=5)


def test_format_table_rounds_to_the_requested_digits():
    from saliency_lib.report import format_table

    rows = [{"group": "source", "condition": "feature map", "iou": [0.3285, 0.2969, 0.3594],
             "centroid_dist": [8.2871, 4.6723, 12.2801]}]
    assert format_table(rows) == ("source      feature map                  iou 0.329 [0.297, 0.359]  "
                                  "centroid_dist 8.287 [4.672, 12.280]")
    assert format_table(rows, ("iou",), digits=2) == "source      feature map                  iou 0.33 [0.30, 0.36]"
    assert format_table(rows, digits={"iou": 2, "centroid_dist": 1}) == (
        "source      feature map                  iou 0.33 [0.30, 0.36]  centroid_dist 8.3 [4.7, 12.3]")


def test_plain_cnn_embed_is_the_heads_hidden_layer():
    torch.manual_seed(0)
    clf = PlainCNN(ClassifierConfig(arch="cnn", width=8)).eval()
    x = torch.randn(3, 3, 32, 32)
    feats = clf.embed(x)
    assert feats.shape == (3, 128)
    assert torch.equal(clf.head[-1](feats), clf(x))


def test_polynomial_mmd2_matches_the_unbiased_estimator_written_out():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64) + 1
    k = lambda a, b: (float(a @ b) / 3 + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(5) for j in range(5) if i != j) / 20
    yy = sum(k(y[i], y[j]) for i in range(4) for j in range(4) if i != j) / 12
    xy = sum(k(x[i], y[j]) for i in range(5) for j in range(4)) / 20
    assert abs(_polynomial_mmd2(x, y) - (xx + yy - 2 * xy)) < 1e-9


def test_kernel_distance_is_near_zero_within_a_distribution_and_grows_with_a_shift():
    g = torch.Generator().manual_seed(1)
    ref, same = torch.randn(2000, 16, generator=g) * 3 + 5, torch.randn(400, 16, generator=g) * 3 + 5
    shifted = torch.randn(400, 16, generator=g) * 3 + 6.5
    before = same.clone()
    kid_same, std_same = kernel_distance(same, ref, subset_size=200, n_subsets=50)
    kid_shift, _ = kernel_distance(shifted, ref, subset_size=200, n_subsets=50)
    assert torch.equal(same, before)                       # pure: the caller's features are left alone
    assert abs(kid_same) < 3 * std_same + 0.01
    assert kid_shift > 10 * max(abs(kid_same), std_same)
    assert kernel_distance(same, ref, 200, 50, seed=3) == kernel_distance(same, ref, 200, 50, seed=3)
    assert kernel_distance(same, ref, 200, 50, seed=3) != kernel_distance(same, ref, 200, 50, seed=4)


def test_kernel_distance_refuses_bad_input():
    a, b = torch.zeros(10, 4), torch.zeros(10, 5)
    with pytest.raises(SaliencyNoiseError, match="same D"):
        kernel_distance(a, b)
    with pytest.raises(SaliencyNoiseError, match="subset_size"):
        kernel_distance(a, torch.zeros(10, 4), subset_size=11)
    with pytest.raises(SaliencyNoiseError, match="n_subsets"):
        kernel_distance(a, torch.zeros(10, 4), subset_size=5, n_subsets=0)


def test_classifier_embeddings_refuses_a_model_without_features():
    with pytest.raises(SaliencyNoiseError, match="embed"):
        classifier_embeddings(torch.nn.Linear(3, 2), torch.zeros(1, 3, 32, 32))


def test_judge_embeddings_separate_real_images_from_noise():
    preset = load_tiny()
    real = data.make_batch("test", 0, 256).images
    ref = judge_embeddings(preset, data.make_batch("val", 0, 512).images)
    noise = torch.rand(256, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    kid_real, std_real = kernel_distance(judge_embeddings(preset, real), ref, subset_size=128, n_subsets=20)
    kid_noise, _ = kernel_distance(judge_embeddings(preset, noise), ref, subset_size=128, n_subsets=20)
    assert abs(kid_real) < 3 * std_real + 0.05
    assert kid_noise > 10 * (abs(kid_real) + std_real)


def test_background_stats_on_known_images():
    images = torch.full((2, 3, 8, 8), -0.5)
    images[1, :, :, 4:] = 0.5                              # image 1: background halves at -0.5 and +0.5
    masks = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    masks[:, :, :2, :2] = True
    images[:, :, :2, :2] = 1.0                             # the object
    before = images.clone()
    s = background_stats(images, masks)
    assert torch.equal(images, before)
    bg1 = images[1, 0][~masks[1, 0]]
    assert abs(s["background_std"] - bg1.std().item() / 2) < 1e-6   # image 0's flat background has std 0
    assert abs(s["background_mean_abs"] - 0.5) < 1e-6 and abs(s["object_mean_abs"] - 1.0) < 1e-6
    with pytest.raises(SaliencyNoiseError, match="bool masks"):
        background_stats(images, masks.float())
    with pytest.raises(SaliencyNoiseError, match="bool masks"):
        background_stats(images, masks[:1])


def test_background_stats_of_dataset_images_on_true_masks():
    batch = data.make_batch("val", 0, 64)
    s = background_stats(batch.images, batch.masks)
    assert 0.05 < s["background_std"] < 0.6                # gradients and texture, not a flat colour
    assert 0 < s["background_mean_abs"] < 1 and 0 < s["object_mean_abs"] <= 1


def test_format_realism_prints_every_row_and_column():
    from saliency_lib.report import format_realism
    row = {"condition": "real (val split)", "kid": 0.01234, "kid_std": 0.5, "kid_colour": -0.02, "kid_colour_std": 0.03,
           "judge_per_class_accuracy": 0.99, "mean_abs": 0.41, "saturated_fraction": 0.04, "background_std": 0.24}
    lines = format_realism([row, {**row, "condition": "other", "kid": 2.0, "layout_iou": [0.1951, 0.1, 0.3]}],
                           digits=2).splitlines()
    assert len(lines) == 3 and "KID (judge)" in lines[0] and "KID (colour)" in lines[0] and "bg std" in lines[0]
    assert lines[1].split() == ["real", "(val", "split)", "0.01", "+-", "0.50", "-0.02", "+-", "0.03", "0.99", "0.41",
                                "0.04", "0.24", "-"]
    assert lines[2].split()[:2] == ["other", "2.00"] and lines[2].split()[-1] == "0.20"


def test_colour_features_are_channel_means_and_stds():
    from saliency_lib.realism import colour_features
    images = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    f = colour_features(images)
    assert f.shape == (4, 6)
    assert torch.allclose(f[:, :3], images.mean(dim=(2, 3))) and torch.allclose(f[:, 3:], images.std(dim=(2, 3)))
    with pytest.raises(SaliencyNoiseError, match=r"\[N, 3, H, W\]"):
        colour_features(images[:, :1])


def test_paired_differences_per_guide():
    from saliency_lib.metrics import paired_differences
    per_guide = {"a": np.array([0.3, 0.2, 0.5, 0.1]), "b": np.array([0.1, 0.3, 0.2, 0.0]), "c": np.zeros(4)}
    d = paired_differences(per_guide, "a")
    assert set(d) == {"b", "c"}
    assert abs(d["b"]["mean_difference_ci95"][0] - 0.125) < 1e-12 and d["b"]["guides_better"] == 3
    lo, hi = d["c"]["mean_difference_ci95"][1:]
    assert lo <= 0.275 <= hi and d["c"]["guides_better"] == 4
    with pytest.raises(SaliencyNoiseError, match="no row 'z'"):
        paired_differences(per_guide, "z")

