"""Standard architectures written as plain torch modules from their published layer tables
(not copied from torchvision, which is not installed), for the importer's parity tests.

* :func:`resnet18` -- He et al., CVPR 2016, Table 1 (18-layer column; basic blocks of two 3x3
  convs, BN after every conv, 1x1 stride-2 projection shortcuts where the width changes,
  option B of sec. 3.3): 11,689,512 parameters at 1,000 classes.
* :func:`vgg11` -- Simonyan & Zisserman, ICLR 2015, Table 1 configuration A (eight 3x3 convs,
  five max pools, three FC layers 4096-4096-classes, ReLU and dropout 0.5 in the classifier),
  with the 7x7 adaptive pool before the classifier of the common implementation:
  132,863,336 parameters at 1,000 classes and 224x224. ``hidden`` and ``pool`` shrink the
  classifier for fast tests.
* :func:`mobilenet_v2` -- Sandler et al., CVPR 2018, Table 2 (t, c, n, s rows) and Fig. 4 /
  Table 1 (inverted residual: 1x1 expansion + ReLU6, 3x3 depthwise + ReLU6, linear 1x1
  projection; residual when stride 1 and widths match), dropout 0.2 before the classifier:
  3,504,872 parameters at 1,000 classes.
* :func:`unet` -- Ronneberger et al., MICCAI 2015, Fig. 1, reduced: double 3x3 convs (padded,
  with BN), 2x2 max pools down, 2x2 stride-2 transposed convs up, skip concatenation, a 1x1
  output conv; ``base`` channels at the top level, doubled per level.
"""

from __future__ import annotations

import torch
from torch import nn


# --------------------------------------------------------------------------------------------
# ResNet-18
# --------------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    """Two 3x3 convs with BN; identity shortcut, or a 1x1 strided conv + BN projection."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """ResNet-18: conv1 7x7/2, max pool 3x3/2, four stages of two basic blocks (64, 128, 256,
    512 channels), global average pool, FC. Input ``(N, 3, H, W)``, output ``(N, classes)``."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths = [64, 128, 256, 512]
        cin = 64
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(cin, w, stride),
                                                         BasicBlock(w, w)))
            cin = w
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes: int = 1000) -> ResNet18:
    return ResNet18(num_classes)


# --------------------------------------------------------------------------------------------
# VGG-11
# --------------------------------------------------------------------------------------------
VGG11_CONFIG = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]
"""Configuration A of Simonyan & Zisserman, Table 1 (numbers: 3x3 conv widths, M: 2x2 max pool)."""


class VGG(nn.Module):
    """VGG: 3x3 convs (padding 1, ReLU) and 2x2 max pools, adaptive average pool to
    ``pool x pool``, classifier FC-``hidden``, FC-``hidden``, FC-classes with ReLU and dropout."""

    def __init__(self, config=VGG11_CONFIG, num_classes: int = 1000, hidden: int = 4096,
                 pool: int = 7) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in config:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(pool)
        self.classifier = nn.Sequential(
            nn.Linear(cin * pool * pool, hidden), nn.ReLU(True), nn.Dropout(0.5),
            nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(0.5),
            nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def vgg11(num_classes: int = 1000, hidden: int = 4096, pool: int = 7) -> VGG:
    return VGG(VGG11_CONFIG, num_classes, hidden, pool)


# --------------------------------------------------------------------------------------------
# MobileNetV2
# --------------------------------------------------------------------------------------------
MOBILENET_V2_TABLE = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                      (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
"""Sandler et al., Table 2: (expansion t, output channels c, repeats n, first stride s)."""


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1,
             act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups,
                                         bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """1x1 expansion to ``t * cin`` (omitted for t = 1), 3x3 depthwise with stride, linear 1x1
    projection; the input is added when stride is 1 and the widths match."""

    def __init__(self, cin: int, cout: int, stride: int, t: int) -> None:
        super().__init__()
        hidden = cin * t
        layers: list[nn.Module] = []
        if t != 1:
            layers.append(_conv_bn(cin, hidden, 1))
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden),
                   _conv_bn(hidden, cout, 1, act=False)]
        self.conv = nn.Sequential(*layers)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 (width multiplier 1): 3x3/2 conv to 32, the Table 2 bottlenecks, 1x1 conv to
    1280, global average pool, dropout 0.2, FC."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(3, 32, 3, 2)]
        cin = 32
        for t, c, n, s in MOBILENET_V2_TABLE:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(_conv_bn(cin, 1280, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).mean((2, 3))
        return self.classifier(x)


def mobilenet_v2(num_classes: int = 1000) -> MobileNetV2:
    return MobileNetV2(num_classes)


# --------------------------------------------------------------------------------------------
# U-Net (small)
# --------------------------------------------------------------------------------------------
def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class UNet(nn.Module):
    """A small U-Net: ``depth`` levels down (double conv, 2x2 max pool), a bottleneck double
    conv, ``depth`` levels up (2x2 stride-2 transposed conv, concatenation with the skip,
    double conv), 1x1 conv to ``out_channels`` logits. Input ``(N, in_channels, H, W)`` with
    H, W divisible by ``2**depth``."""

    def __init__(self, in_channels: int = 1, out_channels: int = 2, base: int = 8,
                 depth: int = 3) -> None:
        super().__init__()
        widths = [base * 2 ** i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        cin = in_channels
        for w in widths[:-1]:
            self.down.append(_double_conv(cin, w))
            cin = w
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = _double_conv(widths[-2], widths[-1])
        self.up = nn.ModuleList()
        self.up_conv = nn.ModuleList()
        for w_lo, w_hi in zip(reversed(widths[:-1]), reversed(widths[1:])):
            self.up.append(nn.ConvTranspose2d(w_hi, w_lo, 2, stride=2))
            self.up_conv.append(_double_conv(2 * w_lo, w_lo))
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, conv, skip in zip(self.up, self.up_conv, reversed(skips)):
            x = conv(torch.cat([skip, up(x)], dim=1))
        return self.head(x)


def unet(in_channels: int = 1, out_channels: int = 2, base: int = 8, depth: int = 3) -> UNet:
    return UNet(in_channels, out_channels, base, depth)


def randomize_bn(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give every batch norm non-trivial statistics and affine parameters (fresh ones are the
    identity, which would hide a wrong fold), in place; returns the module in eval mode."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            c = m.num_features
            with torch.no_grad():
                m.running_mean.copy_(torch.rand(c, generator=g) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.rand(c, generator=g) * 0.2 - 0.1)
    return module.eval()
