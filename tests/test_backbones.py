"""Backbones from the ecosystem: torchvision classifiers, timm models, weights files read without running code."""

import os
import pickle
import sys

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from pbn_cli.cli import app
from pbn_cli.core.errors import InputError
from pbn_cli.networks import backbones, recipe
from pbn_cli.networks.embedder import Embedder, ModelConfig
from pbn_cli.training.presets import resolve

timm = pytest.importorskip("timm")  # the test extra installs it; a user without it gets the error tested below


def _tensors_equal(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in b)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_timm_backbone_loads_a_weights_file(tmp_path, suffix):
    source = timm.create_model("test_efficientnet", num_classes=10)  # with a classifier, as published weights are
    path = tmp_path / f"w{suffix}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    model = Embedder(ModelConfig("timm:test_efficientnet", 64, 8, weights=str(path), keep_pretrained=0.0))
    assert _tensors_equal(model.backbone.state_dict(), {k: v for k, v in state.items() if not k.startswith("classifier")})
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 8)


def test_torchvision_classifier_by_name_with_its_classifier_removed(tmp_path):
    import torchvision

    source = torchvision.models.get_model("mobilenet_v3_small", weights=None)
    path = tmp_path / "mnv3.pth"
    torch.save(source.state_dict(), path)
    model = Embedder(ModelConfig("mobilenet_v3_small", 64, None, weights=str(path), keep_pretrained=0.0))
    assert torch.equal(model.backbone.features[0][0].weight, source.features[0][0].weight)
    assert isinstance(model.backbone.classifier[-1], torch.nn.Identity)
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, model.dim)


def test_a_torchvision_backbone_keeps_its_untouched_copy_and_travels_in_the_state(tmp_path):
    """--keep-pretrained with a torchvision classifier: the copy starts equal, never trains or updates its
    BatchNorm statistics, and a network rebuilt without downloading gets it back from the state dict."""
    import torchvision

    source = torchvision.models.get_model("mobilenet_v3_small", weights=None)
    path = tmp_path / "mnv3.pth"
    torch.save(source.state_dict(), path)
    config = ModelConfig("mobilenet_v3_small", 64, None, weights=str(path), keep_pretrained=1.0)
    model = Embedder(config)
    assert _tensors_equal(model.kept.state_dict(), model.backbone.state_dict())
    assert not any(p.requires_grad for p in model.kept.parameters())
    model.train()
    assert model.backbone.training and not model.kept.training
    before = {k: v.clone() for k, v in model.kept.state_dict().items()}
    model.kept_center.fill_(0.01)
    model(torch.rand(4, 3, 64, 64)).sum().backward()
    assert _tensors_equal(model.kept.state_dict(), before)  # no gradient, no running statistics moved
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 2 * model.feature_dim)
    again = Embedder(config, load_pretrained=False)
    again.load_state_dict(model.state_dict())
    x = torch.rand(2, 3, 64, 64)
    assert torch.allclose(again.eval()(x), model.eval()(x), atol=1e-6)


def test_weights_that_would_run_code_are_refused_and_never_run(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"conv_stem.weight": Payload()}, f)
    with pytest.raises(InputError, match=r"^weights file .*evil\.pt refused: it is not plain tensors .*never runs code"):
        Embedder(ModelConfig("timm:test_efficientnet", 64, 8, weights=str(path)))
    assert not marker.exists()


def test_weights_of_another_architecture_say_so(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model("test_resnet").state_dict().items()}, str(path))
    with pytest.raises(InputError, match="does not fit this backbone: .* tensors are missing"):
        Embedder(ModelConfig("timm:test_efficientnet", 64, 8, weights=str(path)))


def test_missing_timm_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now raises ImportError
    with pytest.raises(InputError, match=r"^timm backbones need the timm extra: pip install 'pbn\[timm\]'$"):
        backbones.check_name("timm:resnet50")
    result = CliRunner().invoke(app, ["train", "--backbone", "timm:resnet50", "-w", "nowhere"])
    assert result.exit_code == 2 and "pip install 'pbn[timm]'" in result.output and "Traceback" not in result.output


def test_unknown_backbone_lists_the_close_matches():
    with pytest.raises(InputError, match=r"unknown backbone 'convnext_tiyn'; did you mean convnext_tiny"):
        backbones.check_name("convnext_tiyn")
    with pytest.raises(InputError, match=r"did you mean .*timm:tf_efficientnet_lite0"):
        backbones.check_name("timm:tf_efficientnet_lite")


def test_normalisation_and_size_follow_the_weights(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model("tf_efficientnet_lite0").state_dict().items()}, str(path))
    config = resolve("quick", "triplet", {"backbone": "timm:tf_efficientnet_lite0", "weights": str(path)})
    assert (config.model.mean, config.model.std, config.model.input_size) == ([0.5] * 3, [0.5] * 3, 224)
    given = resolve("quick", "triplet", {"backbone": "timm:tf_efficientnet_lite0", "weights": str(path), "input_size": 160})
    assert given.model.input_size == 160 and given.model.mean == [0.5] * 3
    scratch = resolve("quick", "triplet", {})
    assert scratch.model.mean == list(recipe.IMAGENET_MEAN)
    tv = resolve("quick", "triplet", {"backbone": "efficientnet_b3", "weights": "IMAGENET1K_V1"})
    assert tv.model.input_size == 300  # the size these weights were trained at
    with pytest.raises(InputError, match="resnet18 has no weights 'IMAGENET9K'; choose one of IMAGENET1K_V1"):
        resolve("quick", "triplet", {"backbone": "resnet18", "weights": "IMAGENET9K"})


def test_the_network_normalises_its_input_as_recorded():
    a = Embedder(ModelConfig("compact", 32, 8, normalize=False, pretrained=False, keep_pretrained=0.0))
    b = Embedder(ModelConfig("compact", 32, 8, normalize=False, pretrained=False, keep_pretrained=0.0, mean=[0.5] * 3,
                             std=[0.5] * 3))
    b.load_state_dict(a.state_dict())
    x = torch.rand(2, 3, 32, 32)
    a.eval(), b.eval()
    imagenet = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(b(x), a(((x - 0.5) / 0.5) * torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
                                   + torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)), atol=1e-5)
    assert not torch.allclose(a(x), a(imagenet))


def test_backbones_command_lists_both_sources():
    result = CliRunner().invoke(app, ["backbones", "lite0"])
    assert result.exit_code == 0 and "timm:tf_efficientnet_lite0" in result.output
    result = CliRunner().invoke(app, ["backbones", "convnext_t"])
    assert "convnext_tiny" in result.output
