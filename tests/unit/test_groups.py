"""Layer groups, presets and ratio parsing."""

import pytest
import torch
from torch import nn

from bcu_gui.core.archs import get_spec
from bcu_gui.core.errors import ConfigError
from bcu_gui.core.groups import PAPER_RESNET, layer_groups, parse_ratios, preset_ratios, resolve_ratios


def test_resnet_has_the_papers_six_groups_without_norm_layers(tiny_resnet):
    groups = layer_groups(tiny_resnet)
    assert [g.name for g in groups] == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    assert groups[0].params == ("conv1.weight",)
    assert groups[-1].params == ("fc.weight", "fc.bias")
    assert not any("bn" in p for g in groups for p in g.params)
    norm_free = sum(p.numel() for n, p in tiny_resnet.named_parameters() if "bn" not in n and "shortcut.1" not in n)
    assert sum(g.weight_count for g in groups) == norm_free


def test_paper_preset_matches_the_brief(tiny_resnet):
    assert preset_ratios("paper", layer_groups(tiny_resnet)) == PAPER_RESNET


def test_uniform_preset_reinitialises_as_many_weights_as_paper(tiny_resnet):
    groups = layer_groups(tiny_resnet)
    paper, uniform = preset_ratios("paper", groups), preset_ratios("uniform", groups)
    assert len(set(uniform.values())) == 1
    count = lambda r: sum(r[g.name] * g.weight_count for g in groups)  # noqa: E731
    assert count(uniform) == pytest.approx(count(paper), rel=1e-3)


def test_decreasing_none_and_strong(tiny_resnet):
    groups = layer_groups(tiny_resnet)
    dec = preset_ratios("decreasing", groups)
    assert dec["stem"] == 0.27 and dec["layer4"] == 0.01
    assert set(preset_ratios("none", groups).values()) == {0.0}
    assert set(preset_ratios("strong", groups).values()) == {1.0}


def test_vgg_groups_follow_its_pooling_stages_and_keep_the_head_whole():
    with torch.device("meta"):
        vgg = get_spec("vgg19_bn").build(num_classes=10)
    names = [g.name for g in layer_groups(vgg)]
    assert names == ["features.0-6", "features.7-13", "features.14-26", "features.27-39", "features.40-52",
                     "classifier"]


def test_other_models_group_by_top_level_children_in_order():
    model = nn.Sequential()
    model.add_module("encoder", nn.Conv2d(3, 4, 3))
    model.add_module("norm", nn.BatchNorm2d(4))
    model.add_module("pool", nn.AdaptiveAvgPool2d(1))
    model.add_module("flat", nn.Flatten())
    model.add_module("classifier", nn.Linear(4, 2))
    groups = layer_groups(model)
    assert [g.name for g in groups] == ["encoder", "classifier"]
    ratios = preset_ratios("paper", groups)
    assert ratios == {"encoder": 0.01, "classifier": 0.10}


def test_parse_and_resolve_ratios(tiny_resnet):
    groups = layer_groups(tiny_resnet)
    ratios = resolve_ratios(groups, "paper", parse_ratios("layer4=0.5, head=1"))
    assert ratios["layer4"] == 0.5 and ratios["head"] == 1.0 and ratios["stem"] == 0.01
    with pytest.raises(ConfigError, match="no layer group named 'layer9'.*stem, layer1"):
        resolve_ratios(groups, "paper", {"layer9": 0.1})
    with pytest.raises(ConfigError, match="between 0 and 1"):
        resolve_ratios(groups, "paper", {"stem": 1.5})
    with pytest.raises(ConfigError, match="group=value"):
        parse_ratios("stem")
    with pytest.raises(ConfigError, match="not a number"):
        parse_ratios("stem=lots")
    with pytest.raises(ConfigError, match="unknown preset"):
        preset_ratios("aggressive", groups)


def test_a_lone_wrapper_child_is_looked_through(tiny_resnet):
    wrapper = nn.Module()
    wrapper.backbone = tiny_resnet
    groups = layer_groups(wrapper)
    assert [g.name for g in groups] == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    assert groups[0].params == ("backbone.conv1.weight",)
    assert all(p in dict(wrapper.named_parameters()) for g in groups for p in g.params)
