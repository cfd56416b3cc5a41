"""Architecture registry and inference from a bare state_dict."""

import pytest
import torch

from bcu_gui.core.archs import REGISTRY, get_spec, infer_architecture, strip_prefixes
from bcu_gui.core.errors import ArchitectureError
from bcu_gui.core.nets import CifarResNet, PreActResNet


@pytest.mark.parametrize("name", ["resnet18_cifar", "resnet34_cifar", "preactresnet18", "vgg19_bn"])
def test_in_house_architectures_round_trip(name):
    spec = REGISTRY[name]
    with torch.device("meta"):  # shapes are all inference reads
        model = spec.build(num_classes=7, width=8)
    found = infer_architecture(model.state_dict())
    assert found.spec.name == name
    assert found.num_classes == 7
    if spec.width_key:
        assert found.width == 8


def test_width_16_cifar_resnet18_is_recognised():
    state = CifarResNet([2, 2, 2, 2], num_classes=10, width=16).state_dict()
    found = infer_architecture(state)
    assert (found.spec.name, found.num_classes, found.width) == ("resnet18_cifar", 10, 16)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny"])
def test_torchvision_architectures_are_recognised(name):
    pytest.importorskip("torchvision")
    with torch.device("meta"):
        model = get_spec(name).build(num_classes=5)
    found = infer_architecture(model.state_dict())
    assert (found.spec.name, found.num_classes) == (name, 5)


def test_cifar_and_torchvision_resnet_are_told_apart():
    pytest.importorskip("torchvision")
    with torch.device("meta"):
        tv = get_spec("resnet18").build(num_classes=10)
    assert infer_architecture(tv.state_dict()).spec.name == "resnet18"
    assert infer_architecture(CifarResNet([2, 2, 2, 2], 10, 8).state_dict()).spec.name == "resnet18_cifar"


def test_unknown_weights_name_the_closest_architecture_and_the_keys():
    state = PreActResNet([2, 2, 2, 2], num_classes=10, width=4).state_dict()
    state["extra.weight"] = torch.zeros(3)
    del state["linear.bias"]
    with pytest.raises(ArchitectureError) as err:
        infer_architecture(state)
    message = str(err.value)
    assert "closest is preactresnet18" in message
    assert "linear.bias" in message and "extra.weight" in message


def test_named_architecture_that_does_not_fit_is_an_error():
    state = CifarResNet([2, 2, 2, 2], 10, 4).state_dict()
    with pytest.raises(ArchitectureError, match="do not fit preactresnet18") as info:
        infer_architecture(state, "preactresnet18")
    assert "leave the architecture out" in str(info.value)  # not "name the architecture": it was named


def test_wrong_shapes_are_reported():
    state = CifarResNet([2, 2, 2, 2], 10, 4).state_dict()
    state["layer2.0.conv1.weight"] = torch.zeros(1, 1, 3, 3)
    with pytest.raises(ArchitectureError, match="layer2.0.conv1.weight"):
        infer_architecture(state)


def test_unknown_name_lists_known_ones():
    with pytest.raises(ArchitectureError, match="resnet18_cifar"):
        get_spec("alexnet9000")


def test_strip_prefixes_handles_dataparallel_and_lightning():
    state = {"model.module.fc.weight": torch.zeros(1), "model.module.fc.bias": torch.zeros(1)}
    assert set(strip_prefixes(state)) == {"fc.weight", "fc.bias"}
    mixed = {"module.a": torch.zeros(1), "b": torch.zeros(1)}
    assert set(strip_prefixes(mixed)) == {"module.a", "b"}
