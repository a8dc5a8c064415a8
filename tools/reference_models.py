"""The reference networks in PyTorch, written for our tests and benchmarks from ../shared/REFERENCE.md: CIFAR
ResNets (6n+2) and VGG16-bn, with the reference's state_dict names and ReLU modules named as psgd names its ReLU
layers. Dropout can be given fixed masks so that PyTorch reproduces the masks psgd drew."""

import torch
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    def __init__(self, inplanes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu2(out + shortcut)


class CifarResNet(nn.Module):
    def __init__(self, depth, num_classes):
        super().__init__()
        assert (depth - 2) % 6 == 0
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        inplanes = 16
        for stage, planes in enumerate((16, 32, 64)):
            blocks = []
            for b in range(n):
                stride = 2 if stage > 0 and b == 0 else 1
                blocks.append(BasicBlock(inplanes, planes, stride))
                inplanes = planes
            setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.avg_pool2d(x, 8)
        return self.fc(x.flatten(1))


class MaskedDropout(nn.Module):
    """Inverted dropout with a mask set from outside (identity in eval mode)."""

    def __init__(self, p):
        super().__init__()
        self.p = p
        self.keep = None

    def forward(self, x):
        if not self.training:
            return x
        return x * torch.as_tensor(self.keep, dtype=x.dtype) / (1.0 - self.p)


VGG16_CONFIG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                512, 512, 512, "M", 512, 512, 512, "M"]


class VGG16BN(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        layers, inplanes = [], 3
        for v in VGG16_CONFIG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(inplanes, v, 3, padding=1, bias=False),
                           nn.BatchNorm2d(v), nn.ReLU()]
                inplanes = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(512, 4096), nn.ReLU(), MaskedDropout(0.5),
            nn.Linear(4096, 4096), nn.ReLU(), MaskedDropout(0.5),
            nn.Linear(4096, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def build(arch, num_classes):
    if arch == "vgg16_bn":
        return VGG16BN(num_classes)
    if arch.startswith("resnet"):
        return CifarResNet(int(arch[len("resnet"):]), num_classes)
    raise ValueError(f"unknown architecture {arch}")
