"""Minimal builders that write checkpoints the way other projects' own code writes them.

Written from the projects' public descriptions (no code copied), small enough for CPU tests:

* kuangliu/pytorch-cifar: ``ResNet18`` with head ``linear`` and blocks with ``shortcut``, forward ending in
  ``avg_pool2d(out, 4)``; ``main.py`` saves ``{'net': net.state_dict(), 'acc': acc, 'epoch': epoch}`` with the
  net wrapped in ``DataParallel`` (keys ``module.``...).
* Lightning's CIFAR-10 tutorial: torchvision's ``resnet18(num_classes=10)`` with ``conv1`` swapped for a 3x3
  stride-1 conv and ``maxpool`` for ``Identity``, held as ``self.model`` in a LightningModule; the ``.ckpt`` is a
  dict with ``state_dict`` (keys ``model.``...), ``hyper_parameters``, ``optimizer_states`` and more.
* The BCU authors' ``resnet18comp``: the torchvision-style CIFAR ResNet (blocks with ``downsample``), saved as
  a plain state_dict.
* BackdoorBench v2: ``save_attack_result`` writes ``{'model_name', 'num_classes', 'model' (state_dict),
  'data_path', 'img_size', 'clean_data', 'bd_train', 'bd_test'}`` where ``bd_test`` is
  ``prepro_cls_DatasetBD_v2.retrieve_state()``: a ``bd_data_container`` whose ``data_dict`` maps each poisoned
  test sample's index to ``(PIL image, backdoor label, original label)``, plus ``original_index_array`` and
  ``poison_indicator`` numpy arrays.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F


class _KBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class KuangliuResNet18(nn.Module):
    """kuangliu/pytorch-cifar's ResNet18 layout (its width is 64; smaller here for speed)."""

    def __init__(self, num_classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        cin, stages = width, []
        for i, stride in enumerate((1, 2, 2, 2)):
            cout = width * 2 ** i
            stages.append(nn.Sequential(_KBlock(cin, cout, stride), _KBlock(cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.avg_pool2d(out, 4)
        return self.linear(out.view(out.size(0), -1))


def write_kuangliu(path: Path, net: nn.Module) -> None:
    state = nn.DataParallel(net).state_dict()  # what main.py saves: the DataParallel wrapper's keys
    torch.save({"net": state, "acc": 93.2, "epoch": 7}, path)


def lightning_tutorial_resnet18(num_classes: int = 10) -> nn.Module:
    from torchvision.models import resnet18

    model = resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)
    model.maxpool = nn.Identity()
    return model


def write_lightning_ckpt(path: Path, model: nn.Module) -> None:
    state = {f"model.{k}": v for k, v in model.state_dict().items()}  # LitResnet holds it as self.model
    params = [p for p in model.parameters()]
    torch.save({
        "epoch": 29, "global_step": 5880, "pytorch-lightning_version": "2.1.0",
        "state_dict": state,
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"current": {"completed": 29}}}},
        "callbacks": {},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.05, "momentum": 0.9,
                                                             "params": list(range(len(params)))}]}],
        "lr_schedulers": [{"last_epoch": 29}],
        "hparams_name": "kwargs",
        "hyper_parameters": {"lr": 0.05},
    }, path)


class _DBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class BcuResNet18Comp(nn.Module):
    """The BCU authors' resnet18comp layout: torchvision-style blocks, 3x3 stem, no max-pool, head ``fc``."""

    def __init__(self, num_classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        cin, stages = width, []
        for i, stride in enumerate((1, 2, 2, 2)):
            cout = width * 2 ** i
            stages.append(nn.Sequential(_DBlock(cin, cout, stride), _DBlock(cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.fc(torch.flatten(self.avgpool(out), 1))


def backdoorbench_bd_test(n: int = 12, target: int = 0, size: int = 32, seed: int = 0) -> dict:
    """``prepro_cls_DatasetBD_v2.retrieve_state()`` of a small all-to-one poisoned test set (in RAM).

    Sample 0 keeps its original label equal to the target, which an ASR must leave out.
    """
    rng = np.random.default_rng(seed)
    data_dict = {}
    for i in range(n):
        pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        pixels[-4:, -4:] = 255  # a white corner patch, as BadNets stamps
        original = target if i == 0 else 1 + i % 9
        data_dict[np.int64(i)] = (Image.fromarray(pixels), target, original)  # keys come from a numpy array
    return {
        "bd_data_container": {"save_folder_path": None, "data_dict": data_dict, "save_file_format": ".png"},
        "getitem_all": True,
        "getitem_all_switch": False,
        "original_index_array": np.arange(n),
        "poison_indicator": np.ones(n),
        "save_folder_path": None,
    }


def write_backdoorbench(path: Path, model_name: str, model: nn.Module, clean_data: str, num_classes: int,
                        img_size=(32, 32, 3), bd_test: dict | None = None) -> None:
    torch.save({
        "model_name": model_name,
        "num_classes": num_classes,
        "model": model.state_dict(),
        "data_path": "./data/" + clean_data,
        "img_size": list(img_size),
        "clean_data": clean_data,
        "bd_train": None,
        "bd_test": bd_test if bd_test is not None else backdoorbench_bd_test(),
    }, path)


class SmallNet(nn.Module):
    """A network of no registered architecture, for TorchScript files we must run as their own code."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))
