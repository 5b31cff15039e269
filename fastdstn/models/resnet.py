"""CIFAR-10 ResNet18: torchvision's resnet18(num_classes=10) turned into STN layers by fastdstn.convert."""
from __future__ import annotations

from torch import nn

from ..nn import convert
from .augment_hypers import image_augmentation
from .base import BuiltModel, dropout


def resnet18(cifar_stem: bool = True) -> BuiltModel:
    """cifar_stem replaces the 7×7/2 stem and its max-pool by a 3×3/1 conv, the usual change for
    32×32 images (otherwise layer4 sees 1×1 maps). BatchNorm stays a plain (general) layer. H = 15."""
    import torchvision  # 1.4 s to import: only when this model is built

    net = torchvision.models.resnet18(num_classes=10)
    if cifar_stem:
        net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
    # Tuned dropout sites: a channel dropout after each of the 4 stages and a dropout before the classifier.
    sites = {}
    for stage in range(1, 5):
        setattr(net, f"layer{stage}", nn.Sequential(getattr(net, f"layer{stage}"), nn.Dropout2d(0.0)))
        sites[f"layer{stage}.1"] = f"dropout_layer{stage}"
    net.fc = nn.Sequential(nn.Dropout(0.0), net.fc)
    sites["fc.0"] = "dropout_fc"
    augment_hypers, augment = image_augmentation()
    hypers = [dropout(name) for name in sites.values()] + augment_hypers
    model = convert(net, len(hypers), dropout=sites)
    return BuiltModel(model, hypers, augment=augment)
