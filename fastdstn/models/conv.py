"""Convolutional models of docs/METHOD.md §8: Fashion-MNIST SimpleCNN, CIFAR-10 AlexNet and VGG16 (no BatchNorm)."""
from __future__ import annotations

import math
from typing import Callable, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import MaxPool2d, StnConv2d, StnDropout, StnDropout2d, StnLinear
from ..nn.pooling import max_pool2d
from .base import BuiltModel, cutout, dense_stack, dropout
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
        x = self.drop1(max_pool2d(F.relu(self.conv1(x)), 2))
        x = self.drop2(max_pool2d(F.relu(self.conv2(x)), 2))
        x = self.drop_fc(F.relu(self.fc1(x.flatten(1))))
        return self.fc2(x)


def simple_cnn() -> BuiltModel:
    hypers = [dropout("dropout_in"), dropout("dropout_conv1"), dropout("dropout_conv2"), dropout("dropout_fc"),
              *cutout()]
    return BuiltModel(SimpleCNN(len(hypers)), hypers,
                      augment={"cutout_length": "cutout_length", "cutout_holes": "cutout_holes"})


class ConvNet(nn.Module):
    """The CIFAR-10 networks of docs/METHOD.md §8 (AlexNet, VGG without BatchNorm), with the authors' dropout
    sites: a channel dropout on the input image, one after each conv block (conv, ReLU, and the max-pool when
    the plan has one next) and one after each hidden classifier layer (fc, ReLU).

    plan: conv widths and "M" (a 2×2 max-pool); kernels, strides: one per conv (padding k // 2);
    classifier: the hidden widths of the fc layers; conv_init: called on every StnConv2d after it is built
    (None: the layers' own initialisation)."""

    def __init__(self, plan: Sequence[Union[int, str]], kernels: Sequence[int], strides: Sequence[int],
                 classifier: Sequence[int], num_hypers: int, image_size: int = 32, classes: int = 10,
                 conv_init: Optional[Callable[[StnConv2d], None]] = None) -> None:
        super().__init__()
        layers: List[nn.Module] = [StnDropout2d("dropout_in")]
        channels, size, convs = 3, image_size, 0
        for i, item in enumerate(plan):
            if item == "M":
                continue
            k, stride = kernels[convs], strides[convs]
            convs += 1
            conv = StnConv2d(channels, int(item), k, num_hypers, stride=stride, padding=k // 2)
            if conv_init is not None:
                conv_init(conv)
            layers += [conv, nn.ReLU()]
            size = (size + 2 * (k // 2) - k) // stride + 1
            if i + 1 < len(plan) and plan[i + 1] == "M":
                layers.append(MaxPool2d(2))
                size //= 2
            layers.append(StnDropout2d(f"dropout_conv{convs}"))
            channels = int(item)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(*dense_stack(channels * size * size, classifier, classes, num_hypers,
                                                     "dropout_fc{}"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def _conv_hypers(plan, classifier) -> list:
    convs = sum(1 for p in plan if p != "M")
    return ([dropout("dropout_in")] + [dropout(f"dropout_conv{i}") for i in range(1, convs + 1)]
            + [dropout(f"dropout_fc{i}") for i in range(1, len(classifier) + 1)])


def _cifar(plan, kernels, strides, classifier, conv_init=None) -> BuiltModel:
    augment_hypers, augment = image_augmentation()
    hypers = _conv_hypers(plan, classifier) + augment_hypers
    return BuiltModel(ConvNet(plan, kernels, strides, classifier, len(hypers), conv_init=conv_init), hypers,
                      augment=augment)


# The authors' CIFAR-10 AlexNet: conv1 3×3 stride 2 (32→16), pools after conv1, conv2 and conv5 (16→8→4→2).
ALEXNET_PLAN = [64, "M", 192, "M", 384, 256, 256, "M"]
ALEXNET_STRIDES = [2, 1, 1, 1, 1]


def alexnet() -> BuiltModel:
    """The authors' CIFAR-10 AlexNet: 5 convs 3×3 (the first with stride 2), 3 pools (32→2), classifier
    256·2·2 = 1024 → 4096 → 4096 → 10; H = 18 (8 dropouts, cutout, colour jitter, affine)."""
    return _cifar(ALEXNET_PLAN, [3] * 5, ALEXNET_STRIDES, (4096, 4096))


VGG16_PLAN = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
# b_r of VGG16's convs, the authors' value: small, but not 0, since with b_r = 0 and V = 0 the gradients of
# b_r and of V's bias rows are exactly 0 (see StnLayer.reset_response_parameters).
VGG_RESPONSE_BIAS = 1e-3


def he_normal(conv: StnConv2d) -> None:
    """The authors' VGG conv initialisation: W_g and W_r ~ N(0, √(2/(k·k·C_out))), b_g = 0, b_r = 0.001.

    Why: without BatchNorm, PyTorch's default init (std 1/√(3·fan_in)) shrinks the activations over the 13 convs,
    and the first conv barely gets a gradient: ‖∂L/∂W_conv1‖ of the cross-entropy on 128 N(0, 1) images with
    random labels, model seeds 0–2, is 1.7–2.0e-7 at the default init (`ConvNet(VGG16_PLAN, [3] * 13, [1] * 13,
    (512, 512), 26)`) and 4.5–4.6e-3 here (`vgg16()`); the features' std 0.006 vs 0.05."""
    std = math.sqrt(2.0 / (conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels))
    with torch.no_grad():
        conv.weight.normal_(0.0, std)
        conv.response_weight.normal_(0.0, std)
        conv.bias.zero_()
        conv.response_bias.fill_(VGG_RESPONSE_BIAS)


def vgg16() -> BuiltModel:
    """VGG16 without BatchNorm (13 convs 3×3, 5 pools: 32→1), He-normal convs (`he_normal`), classifier
    512 → 512 → 512 → 10; H = 26 (16 dropouts, cutout, colour jitter, affine)."""
    return _cifar(VGG16_PLAN, [3] * 13, [1] * 13, (512, 512), conv_init=he_normal)
