import numpy as np
import torch

from saliency_lib.evaluate import bootstrap_ci, centroid_distance, mask_iou, per_class_accuracy


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
