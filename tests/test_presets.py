import functools
import hashlib
import http.server
import threading

import pytest
import torch

from saliency_lib import presets
from saliency_lib.errors import DownloadError, SaliencyNoiseError


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with HTTP Range support; can cut a response short once to simulate an interruption."""
    cut_after: int | None = None

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = self.translate_path(self.path)
        try:
            body = open(path, "rb").read()
        except OSError:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
        else:
            self.send_response(200)
        chunk = body[start:]
        self.send_header("Content-Length", str(len(chunk)))
        self.end_headers()
        if type(self).cut_after is not None:
            self.wfile.write(chunk[: type(self).cut_after])
            type(self).cut_after = None
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(chunk)


@pytest.fixture()
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    payload = bytes(range(256)) * 4096  # 1 MiB
    (root / "weights.bin").write_bytes(payload)
    handler = type("H", (_RangeHandler,), {"cut_after": None})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", payload, handler
    httpd.shutdown()


def test_download_verifies_sha256(server, tmp_path):
    url, payload, _ = server
    digest = hashlib.sha256(payload).hexdigest()
    dest = presets.download(url + "/weights.bin", tmp_path / "cache" / "w.bin", sha256=digest[:8], progress=False)
    assert dest.read_bytes() == payload
    with pytest.raises(DownloadError, match="expected 00000000"):
        presets.download(url + "/weights.bin", tmp_path / "cache" / "w2.bin", sha256="00000000", progress=False)
    assert not (tmp_path / "cache" / "w2.bin").exists() and not (tmp_path / "cache" / "w2.bin.partial").exists()


def test_download_resumes_after_interruption(server, tmp_path):
    url, payload, handler = server
    handler.cut_after = 300_000
    dest = tmp_path / "w.bin"
    with pytest.raises(DownloadError):
        presets.download(url + "/weights.bin", dest, progress=False, timeout=5)
    part = tmp_path / "w.bin.partial"
    assert part.exists() and 0 < part.stat().st_size < len(payload) and not dest.exists()
    presets.download(url + "/weights.bin", dest, sha256=hashlib.sha256(payload).hexdigest(), progress=False)
    assert dest.read_bytes() == payload and not part.exists()


def test_offline_error_names_the_file_and_place(tmp_path):
    dest = tmp_path / "128x128_diffusion.pt"
    with pytest.raises(DownloadError) as e:
        presets.download("http://127.0.0.1:9/128x128_diffusion.pt", dest, progress=False, timeout=2)
    assert str(dest) in str(e.value) and "place it at" in str(e.value)


def test_imagenet128_offline_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(presets, "ADM128_URL", "http://127.0.0.1:9/128x128_diffusion.pt")
    with pytest.raises(DownloadError, match="128x128_diffusion.pt"):
        presets.load_imagenet128(device="cpu", progress=False)


def test_imagenet_classifier_names_without_download():
    from saliency_lib.classifiers import imagenet_class_names

    names = imagenet_class_names()
    assert len(names) == 1000 and names[1] == "goldfish"


def test_unknown_preset():
    with pytest.raises(SaliencyNoiseError, match="unknown preset 'imagenet256'"):
        presets.load_preset("imagenet256")


def test_preset_options_are_checked_against_the_loader():
    """Notebooks pass ``preset_options`` through (``-p preset_options ...`` of the suite): a misspelt or foreign
    option names the options the preset takes, before anything is loaded or downloaded."""
    with pytest.raises(SaliencyNoiseError, match=r"no option\(s\) \['classifier_guidance'\].*model_dir"):
        presets.load_preset("tiny", classifier_guidance=True)
    with pytest.raises(SaliencyNoiseError, match=r"\['classifer_guidance'\].*classifier_guidance"):
        presets.load_preset("imagenet128", "cpu", classifer_guidance=True)


def test_tiny_preset_missing_files_error(tmp_path):
    with pytest.raises(SaliencyNoiseError, match="preset.json"):
        presets.load_tiny(model_dir=tmp_path)


def test_with_ddpm_file_takes_the_files_unet_and_diffusion(tmp_path):
    import json

    from saliency_lib.diffusion import DiffusionConfig
    from saliency_lib.presets import load_tiny, with_ddpm_file
    from saliency_lib.train import DDPMTrainConfig, train_ddpm
    from saliency_lib.training import export_weights
    from saliency_lib.unet import UNetConfig
    from saliency_lib.weights import save_tensors

    unet_cfg = UNetConfig(image_size=32, model_channels=32, out_channels=3, num_res_blocks=1,
                          attention_resolutions=(8,), channel_mult=(1, 2), num_classes=8, num_head_channels=32,
                          null_class=True)
    train_ddpm(tmp_path / "run", DDPMTrainConfig(steps=1, batch_size=2, warmup=1), unet_cfg=unet_cfg,
               diff_cfg=DiffusionConfig(prediction="v"), progress=False)
    export_weights(tmp_path / "run" / "last.safetensors", tmp_path / "ema.safetensors")
    base = load_tiny()
    p = with_ddpm_file(base, tmp_path / "ema.safetensors")
    assert p.diffusion_config.prediction == "v" and p.diffusion().prediction == "v"
    assert p.unet.config.channel_mult == (1, 2) and p.judge_classifier is base.judge_classifier
    assert base.diffusion_config.prediction == "epsilon"   # the shipped DDPM predicts epsilon
    save_tensors(tmp_path / "bare.safetensors", {"w": torch.zeros(1)}, {"note": json.dumps(1)})
    with pytest.raises(SaliencyNoiseError, match="diffusion_config"):
        with_ddpm_file(base, tmp_path / "bare.safetensors")


def test_tiny_preset_loads_a_low_noise_expert_from_its_manifest(tmp_path):
    import json
    import shutil

    from saliency_lib.diffusion import DiffusionConfig
    from saliency_lib.presets import TINY_DIR, load_tiny, with_low_noise_expert
    from saliency_lib.unet import TimestepExperts

    for f in TINY_DIR.glob("*.safetensors"):
        shutil.copy(f, tmp_path / f.name)
    manifest = json.loads((TINY_DIR / "preset.json").read_text())
    manifest.pop("ddpm_low_noise", None)
    (tmp_path / "preset.json").write_text(json.dumps({**manifest, "ddpm_low_noise": {"file": manifest["ddpm"],
                                                                                      "below_t": 400}}))
    p = load_tiny(model_dir=tmp_path)
    assert isinstance(p.unet, TimestepExperts) and p.unet.below_t == 400
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 2])
    base = load_tiny()
    plain = base.unet.bands()[0][0]   # the base DDPM alone, without the shipped experts
    with torch.no_grad():   # the same file as both experts: the same outputs as the plain DDPM, at any t
        torch.testing.assert_close(p.unet(x, torch.tensor([5, 900]), y), plain(x, torch.tensor([5, 900]), y=y))
    # an expert trained for another diffusion process is refused
    from saliency_lib.train import DDPMTrainConfig, train_ddpm
    from saliency_lib.training import export_weights
    train_ddpm(tmp_path / "run", DDPMTrainConfig(steps=1, batch_size=2, warmup=1), unet_cfg=plain.config,
               diff_cfg=DiffusionConfig(prediction="v"), progress=False)
    export_weights(tmp_path / "run" / "last.safetensors", tmp_path / "v.safetensors")
    with pytest.raises(SaliencyNoiseError, match="one diffusion process"):
        with_low_noise_expert(base, tmp_path / "v.safetensors", 500)


def test_shipped_tiny_preset_routes_each_noise_band_to_its_own_expert():
    """The shipped manifest's experts (a chain of two) are separately trained UNets, and
    the preset's DDPM hands each its own band of timesteps: [below_t of the next, below_t) to each expert, the rest
    to the base; there its outputs equal that UNet's, and the UNets differ from each other (none is a copy)."""
    import json

    from saliency_lib.presets import TINY_DIR, load_tiny
    from saliency_lib.unet import TimestepExperts

    manifest = json.loads((TINY_DIR / "preset.json").read_text())
    entries = manifest["ddpm_low_noise"]
    entries = [entries] if isinstance(entries, dict) else entries
    p = load_tiny()
    assert isinstance(p.unet, TimestepExperts)
    bands = p.unet.bands()   # (unet, t_lo, t_hi) from the base to the lowest-noise expert
    thresholds = [lo for _, lo, _ in bands[:-1]]
    assert thresholds == [e["below_t"] for e in entries] and len(bands) == len(entries) + 1
    assert thresholds == [500, 100]   # the shipped chain: base >= 500, middle expert [100, 500), low expert < 100
    x, y = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 3, 8])  # 8: null
    unets = [unet for unet, _, _ in bands]
    with torch.no_grad():
        for unet, lo, hi in bands:
            t = torch.tensor([lo, (lo + hi) // 2, hi - 1])
            torch.testing.assert_close(p.unet(x, t, y), unet(x, t, y=y))
        t = torch.tensor([50, 300, 450])
        for a in range(len(unets)):
            for b in range(a + 1, len(unets)):   # not copies of each other
                assert (unets[a](x, t, y=y) - unets[b](x, t, y=y)).abs().max() > 1e-3


def test_low_noise_experts_stack_from_high_to_low_noise_and_replace_hidden_ones(tmp_path):
    """A second expert with a lower threshold takes the lowest noise levels and leaves the first its band (eDiff-I's
    chain of experts); one whose range covers an existing expert's replaces it (that one would never be called);
    the manifest takes a list, applied in order."""
    import dataclasses
    import json
    import shutil

    from saliency_lib.presets import TINY_DIR, load_tiny, with_low_noise_expert
    from saliency_lib.unet import TimestepExperts

    shipped = load_tiny()
    (base, _, _), (expert, _, _) = shipped.unet.bands()[:2]   # the shipped base DDPM and its first expert, t < 500
    p = dataclasses.replace(shipped, unet=TimestepExperts(base, expert, 500))
    base_file = TINY_DIR / "ddpm.safetensors"
    stacked = with_low_noise_expert(p, base_file, 200).unet   # [0, 200): a copy of the base, [200, 500): the expert
    assert isinstance(stacked.high, TimestepExperts) and (stacked.below_t, stacked.high.below_t) == (200, 500)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 2, 5, 8])
    with torch.no_grad():
        for t, owner in ((torch.tensor([0, 50, 150, 199]), base), (torch.tensor([200, 300, 420, 499]), expert),
                         (torch.tensor([500, 650, 800, 999]), base)):
            torch.testing.assert_close(stacked(x, t, y), owner(x, t, y=y))
        mixed = torch.tensor([100, 300, 700, 250])   # one call routes each sample to its own expert
        want = torch.cat([m(x[i:i + 1], mixed[i:i + 1], y=y[i:i + 1]) for i, m in enumerate((base, expert, base, expert))])
        torch.testing.assert_close(stacked(x, mixed, y), want)
    # a new expert for t < 600 covers both earlier ones: they are dropped, not stacked beneath it
    replaced = with_low_noise_expert(dataclasses.replace(p, unet=stacked), base_file, 600).unet
    assert replaced.below_t == 600 and replaced.high is base
    # the manifest's list form builds the same chain
    for f in TINY_DIR.glob("*.safetensors"):
        shutil.copy(f, tmp_path / f.name)
    manifest = json.loads((TINY_DIR / "preset.json").read_text())
    manifest["ddpm_low_noise"] = [{"file": "ddpm_low_noise.safetensors", "below_t": 500},
                                  {"file": "ddpm.safetensors", "below_t": 200}]
    (tmp_path / "preset.json").write_text(json.dumps(manifest))
    chain = load_tiny(model_dir=tmp_path).unet
    assert (chain.below_t, chain.high.below_t) == (200, 500)
    with torch.no_grad():
        t = torch.tensor([100, 300, 700, 250])
        torch.testing.assert_close(chain(x, t, y), stacked(x, t, y))
    # a list out of order would silently drop an expert: refused
    manifest["ddpm_low_noise"].reverse()
    (tmp_path / "preset.json").write_text(json.dumps(manifest))
    with pytest.raises(SaliencyNoiseError, match="ddpm_low_noise: .*strictly decreasing"):
        load_tiny(model_dir=tmp_path)


def test_expert_thresholds_default_one_expert_and_refuse_mismatched_or_unordered_lists():
    from saliency_lib.presets import expert_thresholds

    assert expert_thresholds(0, []) == []
    assert expert_thresholds(1, []) == [500]
    assert expert_thresholds(2, [500, 200]) == [500, 200]
    for n, below_ts in ((2, []), (2, [500]), (1, [500, 200]), (2, [200, 500]), (2, [300, 300])):
        with pytest.raises(SaliencyNoiseError, match="strictly decreasing"):
            expert_thresholds(n, below_ts)


def test_adm128_classifier_downloads_and_loads_official_weights(server, tmp_path, monkeypatch):
    """The optional ADM-G classifier of imagenet128: fetched like the DDPM (here a small official-format classifier
    served locally, as a .pt state dict), read without unpickling and loaded strictly."""
    import json
    from pathlib import Path

    from safetensors.torch import load_file

    from saliency_lib.unet_encoder import EncoderUNet, EncoderUNetConfig

    fixtures = Path(__file__).parent / "fixtures"
    flags = json.loads((fixtures / "adm_classifier_small_flags.json").read_text())
    cfg = EncoderUNetConfig(image_size=32, model_channels=flags["model_channels"], out_channels=flags["out_channels"],
                            num_res_blocks=1, attention_resolutions=(16, 8), channel_mult=tuple(flags["channel_mult"]),
                            num_heads=1, num_head_channels=flags["num_head_channels"], pool="attention")
    url, _, _ = server
    www = tmp_path / "www"
    torch.save(load_file(str(fixtures / "adm_classifier_small_attention_random.safetensors")), www / "clf.pt")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(presets, "ADM128_CLASSIFIER_URL", url + "/clf.pt")
    monkeypatch.setattr(presets, "ADM128_CLASSIFIER_CONFIG", cfg)
    model = presets.load_adm128_classifier(progress=False)
    assert isinstance(model, EncoderUNet) and not model.training
    assert (tmp_path / "hub" / "checkpoints" / "clf.pt").exists()
    ref = load_file(str(fixtures / "adm_classifier_small_reference.safetensors"))
    with torch.no_grad():
        torch.testing.assert_close(model(ref["x"], ref["t"]), ref["logits_attention"], atol=1e-5, rtol=1e-4)
    monkeypatch.setattr(presets, "ADM128_CLASSIFIER_URL", "http://127.0.0.1:9/128x128_classifier.pt")
    with pytest.raises(DownloadError, match="128x128_classifier.pt"):
        presets.load_adm128_classifier(progress=False)

