"""Building the student: seeded per-element masks, norm layers copied, exact counts."""

import torch

from bcu_gui.core.groups import layer_groups, preset_ratios
from bcu_gui.core.nets import CifarResNet
from bcu_gui.core.reinit import build_student, default_init


def _fresh():
    torch.manual_seed(123)
    return CifarResNet([2, 2, 2, 2], 10, 8)


def test_counts_are_exact_and_match_changed_elements(tiny_resnet):
    groups = layer_groups(tiny_resnet)
    ratios = {"stem": 0.0, "layer1": 0.25, "layer2": 0.5, "layer3": 0.1, "layer4": 0.9, "head": 1.0}
    fresh = _fresh()
    student, report = build_student(tiny_resnet, fresh, groups, ratios, seed=7)
    t, s, f = tiny_resnet.state_dict(), student.state_dict(), fresh.state_dict()
    for g in groups:
        from_fresh = sum(int(((s[p] == f[p]) & (t[p] != f[p])).sum()) for p in g.params)
        assert from_fresh == report.counts[g.name]
        changed = sum(int((s[p] != t[p]).sum()) for p in g.params)
        assert changed == report.counts[g.name]  # every changed element came from the fresh model
        if 0 < ratios[g.name] < 1:
            assert abs(report.counts[g.name] / g.weight_count - ratios[g.name]) < 0.05
    assert report.counts["stem"] == 0
    assert report.counts["head"] == groups[-1].weight_count


def test_normalisation_layers_are_copied_not_reinitialised(tiny_resnet):
    with torch.no_grad():
        tiny_resnet.bn1.weight.fill_(3.0)
        tiny_resnet.bn1.running_mean.fill_(0.5)
    groups = layer_groups(tiny_resnet)
    student, _ = build_student(tiny_resnet, _fresh(), groups, preset_ratios("strong", groups), seed=0)
    assert torch.equal(student.bn1.weight, tiny_resnet.bn1.weight)
    assert torch.equal(student.bn1.running_mean, tiny_resnet.bn1.running_mean)
    assert torch.equal(student.layer3[0].shortcut[1].weight, tiny_resnet.layer3[0].shortcut[1].weight)


def test_same_seed_same_student_other_seed_other_student(tiny_resnet):
    groups = layer_groups(tiny_resnet)
    ratios = preset_ratios("paper", groups)
    a, ra = build_student(tiny_resnet, _fresh(), groups, ratios, seed=1)
    b, rb = build_student(tiny_resnet, _fresh(), groups, ratios, seed=1)
    c, rc = build_student(tiny_resnet, _fresh(), groups, ratios, seed=2)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert ra.counts == rb.counts
    assert not torch.equal(a.layer4[0].conv1.weight, c.layer4[0].conv1.weight)


def test_teacher_is_left_untouched(tiny_resnet):
    before = {k: v.clone() for k, v in tiny_resnet.state_dict().items()}
    groups = layer_groups(tiny_resnet)
    build_student(tiny_resnet, _fresh(), groups, preset_ratios("strong", groups), seed=0)
    assert all(torch.equal(before[k], v) for k, v in tiny_resnet.state_dict().items())


def test_default_init_resets_weights_of_a_model_we_cannot_rebuild(tiny_resnet):
    scripted = torch.jit.script(tiny_resnet)
    fresh = default_init(scripted, seed=5)  # the fixture was made under seed 0
    assert not torch.equal(fresh.conv1.weight, scripted.conv1.weight)
    assert torch.equal(fresh.bn1.weight, scripted.bn1.weight)
    again = default_init(scripted, seed=5)
    assert torch.equal(fresh.conv1.weight, again.conv1.weight)
    plain = default_init(tiny_resnet, seed=5)
    assert not torch.equal(plain.fc.weight, tiny_resnet.fc.weight)
