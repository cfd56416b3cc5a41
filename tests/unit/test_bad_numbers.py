"""Settings and weights that used to be ignored or passed on silently: each is now a clear error."""

import math

import pytest
import torch

from bcu_gui.core.errors import CheckpointError, ConfigError
from bcu_gui.core.groups import parse_ratios
from bcu_gui.core.models import load_model
from bcu_gui.core.normalization import parse_normalization


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_teacher_weights_are_refused_at_load(tiny_resnet, tmp_path, value):
    state = tiny_resnet.state_dict()
    state["layer4.0.conv1.weight"][0, 0, 0, 0] = value
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"non-finite weights \(NaN or Inf\) in layer4.0.conv1.weight"):
        load_model(path)


@pytest.mark.parametrize("text", ["nan,nan", "0.5,inf", "0.1,0.2,0.3,nan,0.2,0.2", "nan,1"])
def test_non_finite_normalisation_is_refused(text):
    with pytest.raises(ConfigError, match="must be finite"):
        parse_normalization(text)


def test_non_finite_normalisation_in_a_checkpoint_is_refused(tiny_resnet, tmp_path):
    path = tmp_path / "meta.pt"
    torch.save({"state_dict": tiny_resnet.state_dict(), "mean": [math.nan] * 3, "std": [0.2] * 3}, path)
    with pytest.raises(ConfigError, match="must be finite"):
        load_model(path)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"input_size": 0}, "input size must lie between"),
    ({"input_size": -3}, "input size must lie between"),
    ({"normalize": ""}, "normalisation is empty"),
    ({"normalize": "  "}, "normalisation is empty"),
])
def test_zero_input_size_and_empty_normalisation_are_errors_not_defaults(tiny_checkpoint, kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_model(tiny_checkpoint, **kwargs)


def test_a_ratio_given_twice_is_an_error():
    with pytest.raises(ConfigError, match="'layer4' is given twice"):
        parse_ratios("layer4=0.2,stem=0.01,layer4=0.5")
    assert parse_ratios("layer4=0.2,stem=0.01") == {"layer4": 0.2, "stem": 0.01}
