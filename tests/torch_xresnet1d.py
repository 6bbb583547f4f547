"""An independent PyTorch XResNet1d, the reference for parity tests and benchmarks.

Written from the architecture description (docs/design.md §3), not from the
Flax module, so a shared misreading would have to be made twice. Only tests
and `experiments/bench_xresnet.py` import it, and only when torch is present.
`load_flax_variables` copies a Flax {'params', 'batch_stats'} tree into it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class ConvBN(nn.Sequential):
  """Conv1d (no bias, 'same' padding) -> BatchNorm1d -> optional ReLU."""

  def __init__(self, c_in, c_out, k=1, stride=1, relu=True):
    layers = [
      nn.Conv1d(c_in, c_out, k, stride=stride, padding=(k - 1) // 2, bias=False),
      nn.BatchNorm1d(c_out),
    ]
    if relu:
      layers.append(nn.ReLU(inplace=True))
    super().__init__(*layers)


class Bottleneck(nn.Module):
  def __init__(self, c_in, width, stride, k, expansion=4):
    super().__init__()
    c_out = width * expansion
    self.conv1 = ConvBN(c_in, width)
    self.conv2 = ConvBN(width, width, k, stride)
    self.conv3 = ConvBN(width, c_out, relu=False)
    nn.init.zeros_(self.conv3[1].weight)
    shortcut = []
    if stride != 1:
      shortcut.append(nn.AvgPool1d(2, ceil_mode=True))
    if c_in != c_out:
      shortcut.append(ConvBN(c_in, c_out, relu=False))
    self.shortcut = nn.Sequential(*shortcut)

  def forward(self, x):
    return F.relu(self.conv3(self.conv2(self.conv1(x))) + self.shortcut(x))


class TorchXResNet1d(nn.Module):
  def __init__(
    self,
    layers: Sequence[int] = (3, 4, 6, 3),
    num_classes=71,
    in_ch=12,
    widths: Sequence[int] = (64, 64, 64, 64),
    stem=(32, 32, 64),
    k=5,
    expansion=4,
    hidden=128,
    dropout=0.5,
  ):
    super().__init__()
    chans = [in_ch, *stem]
    self.stem = nn.Sequential(
      *[ConvBN(chans[i], chans[i + 1], k, 2 if i == 0 else 1) for i in range(len(stem))]
    )
    self.pool = nn.MaxPool1d(3, stride=2, padding=1)
    blocks, c = [], stem[-1]
    for s, (n, w) in enumerate(zip(layers, widths)):
      for b in range(n):
        blocks.append(Bottleneck(c, w, 2 if (s > 0 and b == 0) else 1, k, expansion))
        c = w * expansion
    self.blocks = nn.Sequential(*blocks)
    self.head = nn.Sequential(
      nn.BatchNorm1d(2 * c),
      nn.Dropout(dropout / 2),
      nn.Linear(2 * c, hidden),
      nn.ReLU(inplace=True),
      nn.BatchNorm1d(hidden),
      nn.Dropout(dropout),
      nn.Linear(hidden, num_classes),
    )
    self.layer_counts = tuple(layers)

  def forward(self, x):
    x = self.blocks(self.pool(self.stem(x)))
    x = torch.cat([x.amax(dim=2), x.mean(dim=2)], dim=1)
    return self.head(x)


def _t(a) -> torch.Tensor:
  return torch.from_numpy(np.array(a, dtype=np.float32))


def _load_conv_bn(mod: ConvBN, params, stats):
  # Flax kernel (K, Cin, Cout) -> torch (Cout, Cin, K).
  mod[0].weight.data.copy_(_t(params["kernel"]).permute(2, 1, 0))
  _load_bn(mod[1], params["bn"], stats["bn"])


def _load_bn(bn: nn.BatchNorm1d, params, stats):
  bn.weight.data.copy_(_t(params["scale"]))
  bn.bias.data.copy_(_t(params["bias"]))
  bn.running_mean.copy_(_t(stats["mean"]))
  bn.running_var.copy_(_t(stats["var"]))


def _load_dense(lin: nn.Linear, params):
  lin.weight.data.copy_(_t(params["kernel"]).T)  # (in, out) -> (out, in)
  lin.bias.data.copy_(_t(params["bias"]))


def load_flax_variables(model: TorchXResNet1d, variables) -> TorchXResNet1d:
  """Copies Flax params and batch_stats into `model`, in place."""
  p, s = variables["params"], variables["batch_stats"]
  for i, mod in enumerate(model.stem):
    _load_conv_bn(mod, p[f"stem_{i}"], s[f"stem_{i}"])
  names = [f"stage{si + 1}_block{b}" for si, n in enumerate(model.layer_counts) for b in range(n)]
  for name, blk in zip(names, model.blocks, strict=True):
    for c in ("conv1", "conv2", "conv3"):
      _load_conv_bn(getattr(blk, c), p[name][c], s[name][c])
    if "idconv" in p[name]:
      _load_conv_bn(blk.shortcut[-1], p[name]["idconv"], s[name]["idconv"])
  hp, hs = p["head"], s["head"]
  _load_bn(model.head[0], hp["bn0"], hs["bn0"])
  _load_dense(model.head[2], hp["dense0"])
  _load_bn(model.head[4], hp["bn1"], hs["bn1"])
  _load_dense(model.head[6], hp["dense1"])
  return model
