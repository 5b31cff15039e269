"""Convolutional models of docs/METHOD.md §8: Fashion-MNIST SimpleCNN, CIFAR-10 AlexNet and VGG16 (no BatchNorm)."""
from __future__ import annotations

from typing import List, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import StnConv2d, StnDropout, StnDropout2d, StnLinear
from .base import BuiltModel, cutout, dropout
from .augment_hypers import image_augmentation


class SimpleCNN(nn.Module):
    """conv 1→16 k5 p2, pool, conv 16→32 k5 p2, pool, fc 1568→1568, fc →10 (docs/METHOD.md §8), with input
    dropout, a channel dropout after each conv block and dropout before the last layer. The input dropout is a
    channel dropout as in the authors' code (§8b): on a 1-channel image it keeps or drops the whole image."""

    def __init__(self, num_hypers: int, in_channels: int = 1, classes: int = 10) -> None:
        super().__init__()
        self.drop_in = StnDropout2d("dropout_in")
        self.conv1 = StnConv2d(in_channels, 16, 5, num_hypers, padding=2)
        self.drop1 = StnDropout2d("dropout_conv1")
        self.conv2 = StnConv2d(16, 32, 5, num_hypers, padding=2)
        self.drop2 = StnDropout2d("dropout_conv2")
        self.fc1 = StnLinear(32 * 7 * 7, 32 * 7 * 7, num_hypers)
        self.drop_fc = StnDropout("dropout_fc")
        self.fc2 = StnLinear(32 * 7 * 7, classes, num_hypers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop_in(x)
        x = self.drop1(F.max_pool2d(F.relu(self.conv1(x)), 2))
        x = self.drop2(F.max_pool2d(F.relu(self.conv2(x)), 2))
        x = self.drop_fc(F.relu(self.fc1(x.flatten(1))))
        return self.fc2(x)


def simple_cnn() -> BuiltModel:
    hypers = [dropout("dropout_in"), dropout("dropout_conv1"), dropout("dropout_conv2"), dropout("dropout_fc"),
              *cutout()]
    return BuiltModel(SimpleCNN(len(hypers)), hypers,
                      augment={"cutout_length": "cutout_length", "cutout_holes": "cutout_holes"})


class ConvNet(nn.Module):
    """conv/ReLU stacks with max-pools ("M" in the plan) and a tuned channel dropout after every conv,
    then dropout + StnLinear per classifier layer. Covers AlexNet and VGG without BatchNorm."""

    def __init__(self, plan: Sequence[Union[int, str]], kernels: Sequence[int], classifier: Sequence[int],
                 num_hypers: int, image_size: int = 32, classes: int = 10) -> None:
        super().__init__()
        layers: List[nn.Module] = [StnDropout("dropout_in")]
        channels, size, convs = 3, image_size, 0
        for item in plan:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                size //= 2
            else:
                k = kernels[convs]
                convs += 1
                layers += [StnConv2d(channels, int(item), k, num_hypers, padding=k // 2), nn.ReLU(),
                           StnDropout2d(f"dropout_conv{convs}")]
                channels = int(item)
        self.features = nn.Sequential(*layers)
        head: List[nn.Module] = []
        width = channels * size * size
        for i, out in enumerate(classifier, start=1):
            head += [StnDropout(f"dropout_fc{i}"), StnLinear(width, out, num_hypers), nn.ReLU()]
            width = out
        head += [StnDropout(f"dropout_fc{len(classifier) + 1}"), StnLinear(width, classes, num_hypers)]
        self.classifier = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def _conv_hypers(plan, classifier) -> list:
    convs = sum(1 for p in plan if p != "M")
    return ([dropout("dropout_in")] + [dropout(f"dropout_conv{i}") for i in range(1, convs + 1)]
            + [dropout(f"dropout_fc{i}") for i in range(1, len(classifier) + 2)])


def _cifar(plan, kernels, classifier) -> BuiltModel:
    augment_hypers, augment = image_augmentation()
    hypers = _conv_hypers(plan, classifier) + augment_hypers
    return BuiltModel(ConvNet(plan, kernels, classifier, len(hypers)), hypers, augment=augment)


ALEXNET_PLAN = [64, "M", 192, "M", 384, 256, 256, "M"]
ALEXNET_KERNELS = [5, 5, 3, 3, 3]


def alexnet() -> BuiltModel:
    """The CIFAR-sized AlexNet: 5 convs, 3 pools (32→4), classifier 4096→1024→1024→10; H = 20."""
    return _cifar(ALEXNET_PLAN, ALEXNET_KERNELS, (1024, 1024))


VGG16_PLAN = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def vgg16() -> BuiltModel:
    """VGG16 without BatchNorm (13 convs 3×3, 5 pools: 32→1), classifier 512→512→512→10; H = 28."""
    return _cifar(VGG16_PLAN, [3] * 13, (512, 512))
