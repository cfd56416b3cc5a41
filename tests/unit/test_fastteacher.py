"""The step's teacher with batch norms folded: the same function, fewer passes; the original when folding fails."""

import torch
from torch import nn

from bcu_gui.core.fastteacher import folded_teacher


def _bns(model):
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_a_resnet_teacher_is_folded_into_the_same_function(tiny_resnet):
    with torch.no_grad():  # give the batch norms statistics that are not the identity
        for m in tiny_resnet.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
    x = torch.randn(8, 3, 32, 32)
    folded = folded_teacher(tiny_resnet, x)
    assert folded is not tiny_resnet and _bns(folded) == 0 and _bns(tiny_resnet) == 20  # the original untouched
    assert not any(p.requires_grad for p in folded.parameters()) and not folded.training
    with torch.no_grad():
        assert torch.allclose(folded(x), tiny_resnet(x), rtol=1e-4, atol=1e-5)
        y = torch.randn(4, 3, 32, 32)  # not just the sample it was checked on
        assert torch.allclose(folded(y), tiny_resnet(y), rtol=1e-4, atol=1e-5)


def test_channels_last_input_gives_a_channels_last_copy(tiny_resnet):
    model = tiny_resnet.to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    folded = folded_teacher(model, x)
    conv = next(m for m in folded.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


class Branchy(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.bn(self.conv(x))
        return y if y.sum() > 0 else -y


def test_a_model_that_cannot_be_traced_or_has_nothing_to_fold_is_used_as_it_is():
    x = torch.randn(2, 3, 8, 8)
    branchy = Branchy().eval()
    assert folded_teacher(branchy, x) is branchy
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    assert folded_teacher(plain, x) is plain
    shared = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False)).eval()
    assert folded_teacher(shared, x) is shared  # batch statistics at inference: nothing to fold
