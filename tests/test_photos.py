"""Real photos against EfficientNet-Lite0, offline: loading, classes, IG, the cache, the photo protocol, bad input."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from PIL import Image

from saliency_lib.errors import SaliencyNoiseError
from saliency_lib.inversion import IGConfig, invert_gradients, model_fingerprint
from saliency_lib.photo_protocol import QUICK_PHOTOS, craft_photo_noise, guides_of, object_region
from saliency_lib.photos import (
    BUNDLED_PHOTOS,
    FEATURE_LAYERS,
    PACKAGES,
    bundled_photo_path,
    load_photo_classifier,
    photo_guides,
    read_photo,
)
from saliency_lib.presets import load_preset
from saliency_lib.saliency import feature_map_noise


@pytest.fixture(scope="module")
def lite():
    return load_photo_classifier("trained")


def top1(clf, images):
    with torch.no_grad():
        p = clf(clf.config.normalization.from_diffusion(images)).softmax(-1)
    return [clf.class_names[i] for i in p.argmax(-1).tolist()], p.max(-1).values


def test_offline_load_and_the_cat_photo(lite):
    n = sum(p.numel() for p in lite.parameters())
    assert n == 4_652_008                        # EfficientNet-Lite0: the 4.65M parameters of the shipped state dict
    assert not lite.training and lite.config.state == "trained" and len(lite.class_names) == 1000
    for size in (224, 128):
        names, conf = top1(lite, read_photo(bundled_photo_path("chelsea"), size)[None])
        assert names == ["Egyptian cat"], (size, names)
    names, conf = top1(lite, photo_guides(["coffee", "motorcycle"], 128).images)
    assert names == ["espresso", "moped"] and (conf > 0.9).all()


def test_untrained_state_is_seeded_and_differs(lite):
    a, b = load_photo_classifier("untrained", seed=3), load_photo_classifier("untrained", seed=3)
    assert model_fingerprint(a) == model_fingerprint(b)
    assert model_fingerprint(a) != model_fingerprint(load_photo_classifier("untrained", seed=4))
    assert model_fingerprint(a) != model_fingerprint(lite)


def test_ig_on_a_64px_crop_lowers_the_objective(lite):
    g = photo_guides(["chelsea"], 64, "left")
    x = lite.config.normalization.from_diffusion(g.images)
    res, stats = invert_gradients(lite, x, g.labels, lite.config.normalization, IGConfig(iterations=4, snapshots=(0, 4)),
                                  generator=torch.Generator().manual_seed(0))
    assert stats["loss"].shape == (4, 1)
    assert stats["best_loss"].item() < stats["loss"][0].item() - 0.05
    lo, hi = lite.config.normalization.box(x)
    assert (res.snapshots[4] >= lo - 1e-6).all() and (res.snapshots[4] <= hi + 1e-6).all()


def test_photo_noise_cache_round_trip(lite, tmp_path):
    preset = load_preset("tiny")
    g = photo_guides(["coffee"], 64, labels=["espresso"])
    first = craft_photo_noise(preset, g, lite, (0, 2), seed=5, cache_dir=tmp_path)
    again = craft_photo_noise(preset, g, lite, (0, 2), seed=5, cache_dir=tmp_path)
    assert not first.stats["cached"] and again.stats["cached"]
    assert torch.equal(first.raw[2], again.raw[2]) and torch.equal(first[2], again[2])
    assert first[2].shape == (1, 3, 32, 32) and first.at_ig_resolution()[2].shape == (1, 3, 64, 64)
    assert abs(first.at_ig_resolution()[2].std().item() - 1) < 1e-3


def test_guides_labels_and_crops(lite):
    args = QUICK_PHOTOS
    g = guides_of(args)
    assert g.names == ["chelsea (left)", "coffee (left)"] and g.label_source == "given"
    assert [lite.class_names[i] for i in g.labels.tolist()] == [BUNDLED_PHOTOS[p].label for p in args.photos]
    assert guides_of(args, ["tabby", 967]).labels.tolist() == [lite.class_names.index("tabby"), 967]
    assert guides_of(args, "predicted", classifier=lite).label_source == "predicted"
    assert guides_of(args, None).labels is None
    left, right = (read_photo(bundled_photo_path("rocket"), 64, c) for c in ("left", "right"))
    assert not torch.equal(left, right)
    assert torch.equal(read_photo(bundled_photo_path("rocket"), 64, "right"), right)


def test_object_region_and_feature_maps(lite):
    g = guides_of(QUICK_PHOTOS)
    region = object_region(lite, g, 32, 0.25)
    assert region.shape == (2, 1, 32, 32) and region.dtype == torch.bool
    assert 0.2 < region.float().mean().item() < 0.35
    x = lite.config.normalization.from_diffusion(g.images)
    for layer in FEATURE_LAYERS.values():
        f = feature_map_noise(lite, x, layer)
        assert f.shape == x.shape and abs(f.std().item() - 1) < 0.01


def test_photo_protocol_quick_cli(tmp_path):
    from saliency_lib.evaluate import main

    main(["--threads", "2", "photos", "--quick", "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")])
    res = json.loads((tmp_path / "out" / "photos.json").read_text())
    conditions = [r["condition"] for r in res["rows"]]
    assert conditions[0] == "Gaussian" and "untrained: IG k=3, strength 1" in conditions
    for r in res["rows"]:
        assert r["n_images"] == 4 and r["iou"][1] <= r["iou"][0] <= r["iou"][2]


# ------------------------------------------------------------------------------------------- bad input
def test_bad_photos_get_clear_errors(tmp_path, lite):
    gray = tmp_path / "gray.png"
    Image.new("L", (80, 60), 128).save(gray)
    with pytest.raises(SaliencyNoiseError, match="grayscale.*colour photo"):
        read_photo(gray, 64)
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (20, 40), (10, 20, 30)).save(tiny)
    with pytest.raises(SaliencyNoiseError, match="only 20x40 px.*at least 32"):
        read_photo(tiny, 64)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(SaliencyNoiseError, match="not an image file"):
        read_photo(text, 64)
    with pytest.raises(SaliencyNoiseError, match="does not exist"):
        read_photo(tmp_path / "missing.jpg", 64)
    with pytest.raises(SaliencyNoiseError, match="crop must be"):
        read_photo(bundled_photo_path("coffee"), 64, "middle")
    with pytest.raises(SaliencyNoiseError, match="unknown bundled photo"):
        bundled_photo_path("astronauts")
    with pytest.raises(SaliencyNoiseError, match="only the bundled photos have given labels"):
        photo_guides([str(gray)], 64)
    with pytest.raises(SaliencyNoiseError, match="not an ImageNet class name"):
        photo_guides(["coffee"], 64, labels=["coffee mug!"])
    with pytest.raises(SaliencyNoiseError, match="needs the classifier"):
        photo_guides(["coffee"], 64, labels="predicted")
    with pytest.raises(SaliencyNoiseError, match="one per photo"):
        guides_of(QUICK_PHOTOS, ["tabby"])
    with pytest.raises(SaliencyNoiseError, match="state must be"):
        load_photo_classifier("pretrained")


def test_transparent_photo_is_laid_on_white(tmp_path):
    rgba = tmp_path / "cutout.png"
    im = Image.new("RGBA", (64, 64), (255, 0, 0, 0))
    im.paste((0, 0, 255, 255), (16, 16, 48, 48))
    im.save(rgba)
    x = read_photo(rgba, 64)
    assert torch.allclose(x[:, 0, 0], torch.ones(3)) and torch.allclose(x[:, 32, 32], torch.tensor([-1.0, -1.0, 1.0]))


def test_missing_packages_are_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)   # import fails as if not installed
    with pytest.raises(SaliencyNoiseError) as err:
        load_photo_classifier()
    assert PACKAGES in str(err.value) and "efficientnet_lite_pytorch" in str(err.value)
