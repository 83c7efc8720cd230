from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(autouse=True, scope="session")
def _threads():
    torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True, scope="session")
def _private_ig_cache(tmp_path_factory):
    """Code that falls back to the default IG cache writes into a folder of this test session, not the user's
    ``~/.cache``."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SALIENCY_NOISE_CACHE", str(tmp_path_factory.mktemp("ig_cache")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def small_flags() -> dict:
    return json.loads((FIXTURES / "adm32_small_flags.json").read_text())["flags"]


@pytest.fixture(scope="session")
def reference() -> dict:
    from safetensors.torch import load_file

    return load_file(str(FIXTURES / "adm32_small_reference.safetensors"))


@pytest.fixture(scope="session")
def small_unet(small_flags):
    from safetensors.torch import load_file

    from saliency_lib.unet import UNet

    model = UNet.from_guided_diffusion_flags(small_flags)
    model.load_state_dict(load_file(str(FIXTURES / "adm32_small_random.safetensors")), strict=True)
    return model.eval()
