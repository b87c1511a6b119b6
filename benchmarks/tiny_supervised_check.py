"""Supervised sanity check for the tiny recipe (docs/tiny_recipe.md, "Supervised sanity
checks"): train a network on the labels of the synthetic set with the same batched
augmentation as benchmarks/tiny_recipe_search.py and print the loss and the weighted kNN top-1
before and after. It tells whether a network/optimizer pair learns anything in a few hundred
CPU steps at all. Example::

    PYTHONPATH=. python benchmarks/tiny_supervised_check.py --data /tmp/cls --steps 150 \\
        --lr 1e-3 --adam --zero

``--data`` is a root written by ``moco-synth cls``.
"""

import argparse
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tiny_recipe_search as T  # noqa: E402


class SmallCNN(nn.Module):
    """Four conv-BN-ReLU-maxpool blocks and a linear classifier (the plain-CNN row)."""

    def __init__(self, num_classes: int):
        super().__init__()
        layers, width = [], 3
        for out in (32, 64, 128, 256):
            layers += [nn.Conv2d(width, out, 3, padding=1, bias=False), nn.BatchNorm2d(out)]
            layers += [nn.ReLU(), nn.MaxPool2d(2)]
            width = out
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.fc(self.body(x))


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", required=True)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--width", type=int, default=16, help="ResNet-50 width_per_group")
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--arch", default="resnet50", help="torchvision ResNet name, or 'small'")
    p.add_argument("--zero", action="store_true", help="zero-init residual")
    p.add_argument("--adam", action="store_true", help="AdamW instead of SGD momentum 0.9")
    args = p.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    xtr, ytr = T.load_split(args.data, "train")
    xva, yva = T.load_split(args.data, "val")
    num_classes = int(ytr.max()) + 1
    if args.arch == "small":
        net = SmallCNN(num_classes)
    else:
        kw = dict(width_per_group=args.width) if args.arch == "resnet50" else {}
        net = getattr(torchvision.models, args.arch)(
            num_classes=num_classes, zero_init_residual=args.zero, **kw
        )
    aug = argparse.Namespace(crop_min=0.5, jitter=0.4, hue=0.1, gray_p=0.2)
    if args.adam:
        opt = torch.optim.AdamW(net.parameters(), lr=args.lr)
    else:
        opt = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9, weight_decay=1e-4)
    g = torch.Generator().manual_seed(0)
    print("knn before", T.knn_top1(net, xtr, ytr, xva, yva, size=args.crop), flush=True)
    t0 = time.time()
    for s in range(args.steps):
        lr = args.lr * 0.5 * (1 + math.cos(math.pi * s / args.steps)) * min(1, (s + 1) / 10)
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(len(xtr), (args.batch,), generator=g)
        loss = F.cross_entropy(net(T.augment(xtr[idx], args.crop, g, aug)), ytr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if s % 10 == 0:
            rate = args.batch * (s + 1) / (time.time() - t0)
            print(f"step {s} loss {loss.item():.3f} {rate:.1f} img/s", flush=True)
    print("knn after", T.knn_top1(net, xtr, ytr, xva, yva, size=args.crop), flush=True)


if __name__ == "__main__":
    main()
