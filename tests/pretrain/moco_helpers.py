"""Helpers shared by the pretraining tests (a module, not conftest, so tests can import it)."""

import torch
import torch.nn as nn


class ToyEncoder(nn.Module):
    """conv-BN-ReLU-pool-fc: the smallest module with the ResNet ``fc`` interface and BN."""

    def __init__(self, num_classes=128, width=8):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(x.mean((2, 3)))
