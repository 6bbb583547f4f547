"""XResNet1d: the PTB-XL benchmark's judge and TSTR classifier, in Flax linen.

A twin of `xresnet1d50` / `xresnet1d101` from Strodthoff et al. 2021
(ecg_ptbxl_benchmarking, itself derived from fastai's xresnet), so that AUROCs
are comparable with the benchmark:

* stem: three conv-BN-ReLU layers 12->32 (stride 2) ->32 ->64, kernel 5, then
  max-pool (3, stride 2, padding 1);
* four stages of bottlenecks ([3,4,6,3] for -50, [3,4,23,3] for -101). The
  benchmark sets every stage width to 64 (expansion 4, so 256 channels out of
  every stage), not the 64-128-256-512 of image ResNets; that is what gives
  962,503 parameters with 71 outputs (docs/design.md §3). `widths` overrides it;
* bottleneck: conv1x1-BN-ReLU, conv k5 (stride)-BN-ReLU, conv1x1-BN with a
  zero-initialised gamma, so each block starts as its shortcut;
* shortcut: identity; avg-pool(2, ceil_mode) when strided; then conv1x1-BN
  when the channel count changes. ReLU after the sum;
* head: concat(global max, global avg) -> BN -> Dropout(0.25) -> Dense(128)
  -> ReLU -> BN -> Dropout(0.5) -> Dense(num_classes).

Convs carry no bias (a BN follows each); the two Dense layers do. Conv kernels
are stored (K, Cin, Cout) whatever `conv_impl` computes with, so checkpoints
are interchangeable between implementations. Initialisation follows the
reference: kaiming-normal weights, zero biases, BN gamma 1 (0 on the last BN
of each bottleneck).

Layout: the public input is (B, 12, L) leads-first like the data pipeline; it
is transposed once to channels-last (NWC) and stays there, with the NWC
dimension numbers stated explicitly on every convolution.

Speed on CPU (`experiments/bench_xresnet.py`; every rewrite is exact):
* `materialize` on each block output. XLA's CPU fusion duplicates cheap
  elementwise producers into every consumer, so each block's
  relu(bn(conv3) + shortcut) was recomputed from the whole residual chain of
  its stage, in the forward pass and again in backward consumers. One
  materialisation per block halves the train-mode forward pass.
* `conv_impl='fast'` (default): 1x1 convs through `pointwise_conv`, whose
  custom VJP takes the weight gradient as a dot XLA reads in place (autodiff
  of the conv transposes x and dy first); k5 convs stay
  `conv_general_dilated`, whose backward is fine. 'xla' (plain autodiff)
  and 'matmul' (im2col dots everywhere) are kept for comparison: both slower.
* max-pool as a max of three strided views (reduce_window's gradient costs
  an argmax pass over int32 iotas), and `batch_moments` with a custom VJP.
* Tried and dropped (slower or no gain in the full step): scanning the
  blocks of a stage (fast forward, but the while-loop backward is slow),
  im2col dots for the k5 convs, a custom dot-based k5 weight gradient,
  ynn-friendly transposed copies for the 1x1 weight gradient, and
  two-input reductions for BatchNorm (XLA's own reduction emitter is much
  slower here than YNNPACK's sums, even though those need their input in
  memory).
* `dtype=jnp.bfloat16` computes convs and dots in bf16 with float32
  accumulation; BatchNorm statistics and normalisation stay float32. On the
  2-core dev CPU it is slower than float32 (converts); it is for accelerators.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Dtype = Any

# torch's kaiming_normal_ default (fan_in, gain sqrt(2), untruncated normal),
# which init_cnn applies to every conv and linear layer of the reference.
kaiming_normal = nn.initializers.variance_scaling(2.0, "fan_in", "normal")

# PyTorch BatchNorm defaults: running = 0.9 running + 0.1 batch, eps 1e-5.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def _conv_xla(x, kernel, stride, padding):
  """NWC x WIO -> NWC, stated explicitly so no layout is guessed.

  Accumulates and returns float32 whatever the input dtype: XLA's CPU conv
  otherwise accumulates bf16 in bf16, and BatchNorm wants float32 anyway.
  """
  return lax.conv_general_dilated(
    x,
    kernel,
    window_strides=(stride,),
    padding=[(padding, padding)],
    dimension_numbers=("NWC", "WIO", "NWC"),
    preferred_element_type=jnp.float32,
  )


def _conv_matmul(x, kernel, stride, padding):
  """Convolution as one dot over K concatenated shifted views (im2col)."""
  k_size, c_in, c_out = kernel.shape
  xp = jnp.pad(x, ((0, 0), (padding, padding), (0, 0)))
  out_len = (x.shape[1] + 2 * padding - k_size) // stride + 1
  cols = jnp.concatenate(
    [
      lax.slice_in_dim(xp, k, k + (out_len - 1) * stride + 1, stride, axis=1) for k in range(k_size)
    ],
    axis=-1,
  )
  return jnp.einsum(
    "blc,cd->bld", cols, kernel.reshape(k_size * c_in, c_out), preferred_element_type=jnp.float32
  )


@jax.custom_jvp
def materialize(x):
  """Identity that XLA computes once instead of duplicating into consumers.

  A float divide counts as expensive to XLA's CPU fusion, which then
  refuses to duplicate the producer; x / (x * 0 + 1) == x exactly for finite
  x (XLA does not fold x * 0 for floats). The derivative is the identity.
  """
  return x / (x * 0 + 1)


materialize.defjvp(lambda primals, tangents: (materialize(primals[0]), tangents[0]))


@jax.custom_vjp
def pointwise_conv(x, kernel):
  """1x1 convolution (B, L, C) x (C, D) -> (B, L, D) with a custom VJP.

  Forward is XLA's 1x1 conv (faster than a dot here, in inference too);
  the input gradient is a dot. The weight gradient is dot(dy^T, x) over
  the flattened B*L axis, which XLA's CPU dot reads in place: autodiff of
  the conv instead transposes both x and dy to (C, L, B) layouts first.
  (Transposing the narrower operand into a fast-GEMM-friendly copy was
  tried too: no faster in the full step.)
  """
  return _conv_xla(x, kernel[None], 1, 0)


def _pointwise_fwd(x, kernel):
  return pointwise_conv(x, kernel), (x, kernel)


def _pointwise_bwd(res, dy):
  x, kernel = res
  dx = lax.dot_general(
    dy.astype(kernel.dtype), kernel, (((2,), (1,)), ((), ())), preferred_element_type=jnp.float32
  ).astype(x.dtype)
  dw_t = lax.dot_general(
    dy.astype(x.dtype).reshape(-1, dy.shape[-1]),
    x.reshape(-1, x.shape[-1]),
    (((0,), (0,)), ((), ())),
    preferred_element_type=jnp.float32,
  )
  return dx, dw_t.T.astype(kernel.dtype)


pointwise_conv.defvjp(_pointwise_fwd, _pointwise_bwd)


def _conv_fast(x, kernel, stride, padding):
  if kernel.shape[0] == 1:
    return pointwise_conv(x[:, ::stride] if stride > 1 else x, kernel[0])
  return _conv_xla(x, kernel, stride, padding)


CONV_IMPLS = {"fast": _conv_fast, "xla": _conv_xla, "matmul": _conv_matmul}


def _shifted_views(x, k_size, stride, padding, pad_value):
  """The K views x_pad[:, k::stride] of the output length, NWC."""
  out_len = (x.shape[1] + 2 * padding - k_size) // stride + 1
  xp = jnp.pad(x, ((0, 0), (padding, padding), (0, 0)), constant_values=pad_value)
  return [
    lax.slice_in_dim(xp, k, k + (out_len - 1) * stride + 1, stride, axis=1) for k in range(k_size)
  ]


def max_pool(x):
  """MaxPool1d(3, stride 2, padding 1) as a max of three strided views.

  Same values as `nn.max_pool`; its gradient is three selects, where
  reduce_window's select-and-scatter costs XLA's CPU backend an argmax
  window pass over int32 iotas.
  """
  return functools.reduce(jnp.maximum, _shifted_views(x, 3, 2, 1, -jnp.inf))


def avg_pool_ceil(x):
  """AvgPool1d(2, ceil_mode=True) over the length axis of NWC.

  PyTorch clips the last window to the input, so an odd tail is the mean of
  its one sample: zero-pad, sum pairs, halve all but that tail.
  """
  length = x.shape[1]
  if length % 2:
    x = jnp.pad(x, ((0, 0), (0, 1), (0, 0)))
  pairs = x.reshape(x.shape[0], -1, 2, x.shape[2]).sum(axis=2)
  weight = np.full((pairs.shape[1], 1), 0.5, np.float32)
  if length % 2:
    weight[-1] = 1.0
  return pairs * weight.astype(pairs.dtype)


@jax.custom_vjp
def batch_moments(x):
  """Per-channel mean and biased variance over all axes but the last.

  Two-pass, as torch: E[x^2] - E[x]^2 cancels badly on post-ReLU inputs
  and measurably moved gradients away from torch's. The custom VJP
  recomputes x - mean inside the backward's fused elementwise pass; plain
  autodiff saves it as a full-size residual (2-4% of the CPU train step).
  """
  axes = tuple(range(x.ndim - 1))
  mean = x.mean(axes)
  return mean, jnp.square(x - mean).mean(axes)


def _batch_moments_fwd(x):
  mean, var = batch_moments(x)
  return (mean, var), (x, mean)


def _batch_moments_bwd(res, cotangents):
  x, mean = res
  d_mean, d_var = cotangents
  n = math.prod(x.shape[:-1])
  return ((d_mean + 2.0 * d_var * (x - mean)) / n,)


batch_moments.defvjp(_batch_moments_fwd, _batch_moments_bwd)


class BatchNorm(nn.Module):
  """BatchNorm over all axes but the last, with PyTorch's semantics.

  Unlike `flax.linen.BatchNorm`, the running variance is updated with the
  unbiased batch variance, as torch does, so running statistics match the
  reference (it matters for the head's BN at small batches). Statistics
  (`batch_moments`) and the normalisation run in float32 whatever the
  compute dtype (bf16 reductions are slow and inaccurate on CPU); the
  normalisation is one scale and shift per channel.
  """

  zero_gamma: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    feat = x.shape[-1]
    scale = self.param(
      "scale",
      nn.initializers.zeros if self.zero_gamma else nn.initializers.ones,
      (feat,),
      jnp.float32,
    )
    bias = self.param("bias", nn.initializers.zeros, (feat,), jnp.float32)
    ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (feat,), jnp.float32)
    ra_var = self.variable("batch_stats", "var", jnp.ones, (feat,), jnp.float32)
    xf = x.astype(jnp.float32)
    if train:
      mean, var = batch_moments(xf)
      if not self.is_initializing():
        n = math.prod(x.shape[:-1])
        unbiased = var * (n / max(n - 1, 1))
        ra_mean.value = BN_MOMENTUM * ra_mean.value + (1 - BN_MOMENTUM) * mean
        ra_var.value = BN_MOMENTUM * ra_var.value + (1 - BN_MOMENTUM) * unbiased
    else:
      mean, var = ra_mean.value, ra_var.value
    mul = scale * lax.rsqrt(var + BN_EPSILON)
    return (xf * mul + (bias - mean * mul)).astype(self.dtype)


class ConvBN(nn.Module):
  """Conv (no bias) -> BatchNorm -> optional ReLU: fastai's ConvLayer, bn first."""

  features: int
  kernel_size: int = 1
  stride: int = 1
  relu: bool = True
  zero_gamma: bool = False
  conv_impl: str = "fast"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    kernel = self.param(
      "kernel", kaiming_normal, (self.kernel_size, x.shape[-1], self.features), jnp.float32
    )
    y = CONV_IMPLS[self.conv_impl](
      x, kernel.astype(self.dtype), self.stride, (self.kernel_size - 1) // 2
    )
    y = BatchNorm(zero_gamma=self.zero_gamma, dtype=self.dtype, name="bn")(y, train)
    return nn.relu(y) if self.relu else y


class Bottleneck(nn.Module):
  """fastai ResBlock with expansion 4; the stride sits on the k5 conv."""

  width: int
  stride: int = 1
  kernel_size: int = 5
  expansion: int = 4
  conv_impl: str = "fast"
  materialize: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    out_ch = self.width * self.expansion
    conv = functools.partial(ConvBN, conv_impl=self.conv_impl, dtype=self.dtype)
    y = conv(self.width, name="conv1")(x, train)
    y = conv(self.width, self.kernel_size, self.stride, name="conv2")(y, train)
    y = conv(out_ch, relu=False, zero_gamma=True, name="conv3")(y, train)
    # pool_first=True in the reference: pool, then the 1x1 projection.
    shortcut = avg_pool_ceil(x) if self.stride != 1 else x
    if x.shape[-1] != out_ch:
      shortcut = conv(out_ch, relu=False, name="idconv")(shortcut, train)
    out = nn.relu(y + shortcut)
    return materialize(out) if self.materialize else out


class XResNet1d(nn.Module):
  """XResNet1d on (B, leads, L) input; returns (B, num_classes) float32 logits.

  `dtype` is the compute dtype; parameters and BatchNorm statistics are
  always float32. Dropout draws from the 'dropout' rng; training needs
  `mutable=['batch_stats']`. `materialize=None` applies `materialize` to
  block outputs only when tracing for the CPU backend, where it pays.
  """

  layers: Sequence[int] = (3, 4, 6, 3)
  num_classes: int = 71
  widths: Sequence[int] = (64, 64, 64, 64)
  stem_widths: Sequence[int] = (32, 32, 64)
  kernel_size: int = 5
  kernel_size_stem: int = 5
  expansion: int = 4
  head_hidden: int = 128
  head_dropout: float = 0.5
  conv_impl: str = "fast"
  materialize: bool | None = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    if x.ndim != 3:
      raise ValueError(f"XResNet1d expects (batch, leads, length), got {x.shape}")
    if self.conv_impl not in CONV_IMPLS:
      raise ValueError(f"unknown conv_impl {self.conv_impl!r}; choose from {sorted(CONV_IMPLS)}")
    mat = (jax.default_backend() == "cpu") if self.materialize is None else self.materialize
    conv = functools.partial(ConvBN, conv_impl=self.conv_impl, dtype=self.dtype)
    x = jnp.transpose(x, (0, 2, 1)).astype(self.dtype)  # once, to NWC
    for i, w in enumerate(self.stem_widths):
      x = conv(w, self.kernel_size_stem, 2 if i == 0 else 1, name=f"stem_{i}")(x, train)
    x = max_pool(x)
    for s, (n_blocks, width) in enumerate(zip(self.layers, self.widths)):
      for b in range(n_blocks):
        x = Bottleneck(
          width,
          stride=2 if (s > 0 and b == 0) else 1,
          kernel_size=self.kernel_size,
          expansion=self.expansion,
          conv_impl=self.conv_impl,
          materialize=mat,
          dtype=self.dtype,
          name=f"stage{s + 1}_block{b}",
        )(x, train)
    return ConcatPoolHead(
      self.num_classes, self.head_hidden, self.head_dropout, dtype=self.dtype, name="head"
    )(x, train)


class ConcatPoolHead(nn.Module):
  """fastai create_head1d with lin_ftrs=[128], ps=0.5 (0.25 on the first layer)."""

  num_classes: int
  hidden: int = 128
  dropout: float = 0.5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    # AdaptiveConcatPool1d order: max first, then average.
    x = jnp.concatenate([x.max(axis=1), x.mean(axis=1)], axis=-1)
    bn = functools.partial(BatchNorm, dtype=self.dtype)
    dense = functools.partial(
      nn.Dense, kernel_init=kaiming_normal, dtype=self.dtype, param_dtype=jnp.float32
    )
    x = bn(name="bn0")(x, train)
    x = nn.Dropout(self.dropout / 2, deterministic=not train)(x)
    x = nn.relu(dense(self.hidden, name="dense0")(x))
    x = bn(name="bn1")(x, train)
    # The penultimate layer: the embedding the audit measures distances in
    # (`apply(..., mutable=["intermediates"])` returns it; free otherwise).
    self.sow("intermediates", "embedding", x.astype(jnp.float32))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return dense(self.num_classes, name="dense1")(x).astype(jnp.float32)


def xresnet1d50(**kwargs) -> XResNet1d:
  return XResNet1d(layers=(3, 4, 6, 3), **kwargs)


def xresnet1d101(**kwargs) -> XResNet1d:
  return XResNet1d(layers=(3, 4, 23, 3), **kwargs)


def count_params(model: nn.Module, length: int = 1000, leads: int = 12) -> int:
  """Trainable parameters (BatchNorm statistics excluded), shapes only."""
  shapes = jax.eval_shape(
    lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, leads, length)), train=False)
  )
  return sum(math.prod(p.shape) for p in jax.tree_util.tree_leaves(shapes["params"]))
