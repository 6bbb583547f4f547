"""A PyTorch twin of the generator: VAE encoder/decoder, latent U-Net, DDIM with CFG.

The reference for parity tests (tests/test_torch_generator.py) and for the
throughput benchmarks (experiments/bench_sampler.py, experiments/bench_generator_train.py).
Written from the architecture description (docs/design.md §3) in PyTorch's own
idiom: channels-first (B, C, L) `Conv1d`, `GroupNorm`, `scaled_dot_product_attention`,
and the classifier-free guidance pass over the stacked batch [x; x]. Only tests
and benchmarks import it, and only when torch is present.

`load_flax_params` copies a Flax parameter tree into a twin whose module paths
are the Flax names (`down0_res0.conv1` <-> `down0_res0/conv1`), so every tensor
has exactly one source and a missing or extra one is an error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

NUM_LEADS, SIGNAL_LEN, PADDED_LEN = 12, 1000, 1024
PAD_LEFT = (PADDED_LEN - SIGNAL_LEN) // 2
NUM_LABELS, COND_DIM = 71, 76


def _groups(c: int, max_groups: int = 32) -> int:
  return next(g for g in range(min(max_groups, c), 0, -1) if c % g == 0)


def group_norm(c: int) -> nn.GroupNorm:
  return nn.GroupNorm(_groups(c), c, eps=1e-6)


def conv(c_in: int, c_out: int, k: int) -> nn.Conv1d:
  """Stride-1 'same' convolution for odd k."""
  return nn.Conv1d(c_in, c_out, k, padding=(k - 1) // 2)


class ResBlock(nn.Module):
  """GroupNorm-SiLU-Conv, GroupNorm (FiLM by the embedding)-SiLU-Conv, plus the input."""

  def __init__(self, c_in: int, c_out: int, k: int, emb_dim: int | None = None):
    super().__init__()
    self.norm1 = group_norm(c_in)
    self.conv1 = conv(c_in, c_out, k)
    self.norm2 = group_norm(c_out)
    self.emb_proj = nn.Linear(emb_dim, 2 * c_out) if emb_dim else None
    self.conv2 = conv(c_out, c_out, k)
    self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else None

  def forward(self, x, emb=None):
    h = self.norm2(self.conv1(F.silu(self.norm1(x))))
    if self.emb_proj is not None:
      scale, shift = self.emb_proj(F.silu(emb))[:, :, None].chunk(2, dim=1)
      h = h * (1.0 + scale) + shift
    h = self.conv2(F.silu(h))
    return (x if self.skip is None else self.skip(x)) + h


class Downsample(nn.Module):
  """Stride-2 convolution with TensorFlow 'SAME' padding (the extra zero on the right)."""

  def __init__(self, c: int, k: int):
    super().__init__()
    self.k = k
    self.conv = nn.Conv1d(c, c, k, stride=2)

  def forward(self, x):
    length = x.shape[-1]
    total = max((-(-length // 2) - 1) * 2 + self.k - length, 0)
    return self.conv(F.pad(x, (total // 2, total - total // 2)))


class Upsample(nn.Module):
  def __init__(self, c: int, k: int):
    super().__init__()
    self.conv = conv(c, c, k)

  def forward(self, x):
    return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Attention(nn.Module):
  """Multi-head attention with the Flax layout: per-head q, k, v and an output projection."""

  def __init__(self, c: int, heads: int):
    super().__init__()
    self.heads = heads
    self.query, self.key, self.value, self.out = (nn.Linear(c, c) for _ in range(4))

  def forward(self, h):  # (B, L, C)
    b, length, c = h.shape
    split = lambda t: t.view(b, length, self.heads, c // self.heads).transpose(1, 2)
    o = F.scaled_dot_product_attention(
      split(self.query(h)), split(self.key(h)), split(self.value(h))
    )
    return self.out(o.transpose(1, 2).reshape(b, length, c))


class SelfAttention(nn.Module):
  def __init__(self, c: int, heads: int):
    super().__init__()
    self.norm = group_norm(c)
    self.attn = Attention(c, heads)

  def forward(self, x):  # (B, C, L)
    return x + self.attn(self.norm(x).transpose(1, 2)).transpose(1, 2)


def sinusoidal_embedding(t, dim: int, max_period: float = 10_000.0):
  half = dim // 2
  freqs = torch.exp(
    -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
  )
  args = t.float()[:, None] * freqs[None, :]
  emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
  return F.pad(emb, (0, dim % 2))


class LinearCond(nn.Module):
  def __init__(self, dim: int):
    super().__init__()
    self.dense0, self.dense1 = nn.Linear(COND_DIM, dim), nn.Linear(dim, dim)

  def forward(self, cond):
    return self.dense1(F.silu(self.dense0(cond)))


class NLECond(nn.Module):
  """(71, 2, dim) table: the absent or present entry of each label, folded by a 1x1 conv."""

  def __init__(self, dim: int):
    super().__init__()
    self.label_table = nn.Parameter(torch.zeros(NUM_LABELS, 2, dim))
    self.label_fold = nn.Linear(NUM_LABELS, 1)
    self.demo_proj = nn.Linear(COND_DIM - NUM_LABELS, dim)

  def forward(self, cond):
    labels, demo = cond[:, :NUM_LABELS], cond[:, NUM_LABELS:]
    idx = labels.round().long()  # (B, 71) in {0, 1}
    table = self.label_table[None].expand(len(cond), -1, -1, -1)
    picked = torch.gather(table, 2, idx[:, :, None, None].expand(-1, -1, 1, table.shape[-1]))
    folded = self.label_fold(picked[:, :, 0].transpose(1, 2))[..., 0]
    return folded + self.demo_proj(demo)


class CondEmbed(nn.Module):
  def __init__(self, dim: int, kind: str):
    super().__init__()
    if kind == "linear":
      self.linear = LinearCond(dim)
    elif kind == "nle":
      self.nle = NLECond(dim)
    else:
      raise ValueError(kind)
    self.kind = kind
    self.null_embedding = nn.Parameter(torch.zeros(dim))

  def forward(self, cond, drop):
    emb = getattr(self, self.kind)(cond)
    return torch.where(drop[:, None], self.null_embedding[None], emb)


class TorchUNet(nn.Module):
  """Latent denoiser, (B, 4, L) -> (B, 4, L), the same levels, skips and attention."""

  def __init__(
    self,
    channels: Sequence[int] = (64, 128, 192),
    num_res_blocks: int = 2,
    attention_levels: Sequence[int] = (2,),
    num_heads: int = 4,
    latent_channels: int = 4,
    kernel_size: int = 3,
    cond_embedding: str = "linear",
    emb_dim: int | None = 240,
    **unused,
  ):
    super().__init__()
    k, ch0 = kernel_size, channels[0]
    emb_dim = emb_dim or 4 * ch0
    self.ch0, self.levels = ch0, len(channels)
    self.time_dense0, self.time_dense1 = nn.Linear(ch0, emb_dim), nn.Linear(emb_dim, emb_dim)
    self.cond_embed = CondEmbed(emb_dim, cond_embedding)
    self.conv_in = conv(latent_channels, ch0, k)
    self.down: list[tuple[str, str | None]] = []  # (block, attention or None), in order
    skips, c = [ch0], ch0
    for i, ch in enumerate(channels):
      for j in range(num_res_blocks):
        self.add_module(f"down{i}_res{j}", ResBlock(c, ch, k, emb_dim))
        c = ch
        attn = f"down{i}_attn{j}" if i in attention_levels else None
        if attn:
          self.add_module(attn, SelfAttention(c, num_heads))
        self.down.append((f"down{i}_res{j}", attn))
        skips.append(c)
      if i < self.levels - 1:
        self.add_module(f"down{i}_sample", Downsample(c, k))
        self.down.append((f"down{i}_sample", None))
        skips.append(c)
    self.mid_res0 = ResBlock(c, c, k, emb_dim)
    self.mid_attn = SelfAttention(c, num_heads)
    self.mid_res1 = ResBlock(c, c, k, emb_dim)
    self.up: list[tuple[str, str | None]] = []
    for i in reversed(range(self.levels)):
      ch = channels[i]
      for j in range(num_res_blocks + 1):
        self.add_module(f"up{i}_res{j}", ResBlock(c + skips.pop(), ch, k, emb_dim))
        c = ch
        attn = f"up{i}_attn{j}" if i in attention_levels else None
        if attn:
          self.add_module(attn, SelfAttention(c, num_heads))
        self.up.append((f"up{i}_res{j}", attn))
      if i > 0:
        self.add_module(f"up{i}_sample", Upsample(c, k))
        self.up.append((f"up{i}_sample", None))
    self.norm_out = group_norm(ch0)
    self.conv_out = conv(ch0, latent_channels, k)

  def forward(self, x, t, cond, drop):
    t = torch.as_tensor(t).expand(x.shape[0])
    temb = self.time_dense1(F.silu(self.time_dense0(sinusoidal_embedding(t, self.ch0))))
    emb = temb + self.cond_embed(cond, drop)
    h = self.conv_in(x)
    skips = [h]
    for name, attn in self.down:
      mod = getattr(self, name)
      h = mod(h, emb) if isinstance(mod, ResBlock) else mod(h)
      if attn:
        h = getattr(self, attn)(h)
      skips.append(h)
    h = self.mid_res1(self.mid_attn(self.mid_res0(h, emb)), emb)
    for name, attn in self.up:
      mod = getattr(self, name)
      if isinstance(mod, ResBlock):
        h = mod(torch.cat([h, skips.pop()], dim=1), emb)
      else:
        h = mod(h)
      if attn:
        h = getattr(self, attn)(h)
    assert not skips
    return self.conv_out(F.silu(self.norm_out(h)))


class Encoder(nn.Module):
  def __init__(self, channels, num_res_blocks, latent_channels, kernel_size, mid_attention, heads):
    super().__init__()
    k, c = kernel_size, channels[0]
    self.conv_in = conv(NUM_LEADS, c, k)
    self.blocks: list[str] = []
    for i, ch in enumerate(channels):
      for j in range(num_res_blocks):
        self.add_module(f"down{i}_res{j}", ResBlock(c, ch, k))
        self.blocks.append(f"down{i}_res{j}")
        c = ch
      if i < len(channels) - 1:
        self.add_module(f"down{i}_sample", Downsample(c, k))
        self.blocks.append(f"down{i}_sample")
    self.mid_res0 = ResBlock(c, c, k)
    self.mid_attn = SelfAttention(c, heads) if mid_attention else None
    self.mid_res1 = ResBlock(c, c, k)
    self.norm_out = group_norm(c)
    self.conv_out = conv(c, 2 * latent_channels, k)

  def forward(self, x):
    h = self.conv_in(x)
    for name in self.blocks:
      h = getattr(self, name)(h)
    h = self.mid_res0(h)
    if self.mid_attn is not None:
      h = self.mid_attn(h)
    h = self.mid_res1(h)
    return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
  def __init__(self, channels, num_res_blocks, latent_channels, kernel_size, mid_attention, heads):
    super().__init__()
    k, c = kernel_size, channels[-1]
    self.conv_in = conv(latent_channels, c, k)
    self.mid_res0 = ResBlock(c, c, k)
    self.mid_attn = SelfAttention(c, heads) if mid_attention else None
    self.mid_res1 = ResBlock(c, c, k)
    self.blocks: list[str] = []
    for i in reversed(range(len(channels))):
      ch = channels[i]
      for j in range(num_res_blocks):
        self.add_module(f"up{i}_res{j}", ResBlock(c, ch, k))
        self.blocks.append(f"up{i}_res{j}")
        c = ch
      if i > 0:
        self.add_module(f"up{i}_sample", Upsample(c, k))
        self.blocks.append(f"up{i}_sample")
    self.norm_out = group_norm(c)
    self.conv_out = conv(c, NUM_LEADS, k)

  def forward(self, z):
    h = self.mid_res0(self.conv_in(z))
    if self.mid_attn is not None:
      h = self.mid_attn(h)
    h = self.mid_res1(h)
    for name in self.blocks:
      h = getattr(self, name)(h)
    return self.conv_out(F.silu(self.norm_out(h)))


class TorchVAE(nn.Module):
  """(B, 12, 1000) <-> (B, latent_channels, 128): pad 12 + 12 to 1024, crop back."""

  def __init__(
    self,
    channels: Sequence[int] = (64, 160, 224, 256),
    num_res_blocks: int = 1,
    latent_channels: int = 4,
    kernel_size: int = 3,
    mid_attention: bool = True,
    num_heads: int = 4,
    **unused,
  ):
    super().__init__()
    args = (tuple(channels), num_res_blocks, latent_channels, kernel_size, mid_attention, num_heads)
    self.encoder, self.decoder = Encoder(*args), Decoder(*args)

  def encode(self, x):
    pad = (PAD_LEFT, PADDED_LEN - SIGNAL_LEN - PAD_LEFT)
    mean, logvar = self.encoder(F.pad(x, pad)).chunk(2, dim=1)
    return mean, logvar.clamp(-30.0, 20.0)

  def decode(self, z):
    return self.decoder(z)[:, :, PAD_LEFT : PAD_LEFT + SIGNAL_LEN]

  def forward(self, x, sample: bool = False):
    mean, logvar = self.encode(x)
    z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean) if sample else mean
    return self.decode(z), mean, logvar


# ------------------------------------------------------------------ weights


def load_flax_params(model: nn.Module, variables) -> nn.Module:
  """Copies a Flax {'params': ...} tree (or the bare params) into `model`, in place.

  Conv kernels (K, Cin, Cout) -> (Cout, Cin, K); Dense kernels (in, out) -> (out, in);
  attention's per-head (C, H, D) / (H, D, C) kernels flattened to (C, C) first;
  GroupNorm `scale` -> `weight`. Every Flax leaf must be used exactly once.
  """
  tree = variables.get("params", variables)
  used = 0
  with torch.no_grad():
    for mname, mod in model.named_modules():
      own = list(mod.named_parameters(recurse=False))
      if not own:
        continue
      node = tree
      for part in mname.split(".") if mname else ():
        node = node[part]
      for pname, param in own:
        if pname == "weight":
          src = np.asarray(node["scale" if isinstance(mod, nn.GroupNorm) else "kernel"])
          if isinstance(mod, nn.Conv1d):
            src = src.transpose(2, 1, 0)
          elif isinstance(mod, nn.Linear):
            src = src.reshape(-1, src.shape[-1]) if mname.endswith(".out") else src
            src = src.reshape(src.shape[0], -1).T
        else:
          src = np.asarray(node[pname])
        src = src.reshape(param.shape) if pname == "bias" else src
        if src.shape != tuple(param.shape):
          raise ValueError(f"{mname}.{pname}: flax {src.shape} vs torch {tuple(param.shape)}")
        param.copy_(torch.from_numpy(np.array(src, np.float32)))
        used += src.size
  total = sum(int(np.prod(np.shape(a))) for a in _leaves(tree))
  if used != total:
    raise ValueError(f"copied {used} of {total} flax parameters: the twin's structure differs")
  return model


def _leaves(tree):
  if isinstance(tree, dict) or hasattr(tree, "items"):
    for v in tree.values():
      yield from _leaves(v)
  else:
    yield tree


# ------------------------------------------------------------------ sampling


class Schedule:
  """sqrt(a) and sqrt(1 - a) tables of a discrete schedule, as float32 tensors."""

  def __init__(self, sqrt_alphas_cumprod, sqrt_one_minus_alphas_cumprod):
    self.sa = torch.tensor(np.array(sqrt_alphas_cumprod, np.float32))
    self.s1m = torch.tensor(np.array(sqrt_one_minus_alphas_cumprod, np.float32))

  @classmethod
  def linear(cls, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 2e-2):
    a = np.cumprod(1.0 - np.linspace(beta_start, beta_end, T, dtype=np.float64))
    return cls(np.sqrt(a), np.sqrt(1.0 - a))

  def __len__(self):
    return len(self.sa)


def ddim_timesteps(T: int, num_steps: int):
  """'Trailing' evenly spaced t from T - 1 to 0; t_prev = -1 marks the last step."""
  ts = np.round(np.linspace(T - 1, 0, num_steps)).astype(np.int64)
  return list(zip(ts.tolist(), ts[1:].tolist() + [-1], strict=True))


class TorchGenerator(nn.Module):
  """U-Net (v- or eps-prediction) + VAE decoder + de-standardisation, DDIM eta = 0."""

  def __init__(self, unet: TorchUNet, vae: TorchVAE, schedule: Schedule, prediction: str = "v"):
    super().__init__()
    self.unet, self.vae, self.schedule, self.prediction = unet, vae, schedule, prediction
    self.register_buffer("latent_scale", torch.ones(()))
    self.register_buffer("signal_mean", torch.zeros(NUM_LEADS))
    self.register_buffer("signal_std", torch.ones(NUM_LEADS))
    self.denoise = self.unet  # what `sample` calls; may be replaced by torch.compile(unet)

  def load_stats(self, params) -> TorchGenerator:
    for name in ("latent_scale", "signal_mean", "signal_std"):
      getattr(self, name).copy_(torch.as_tensor(np.asarray(params[name], np.float32)))
    return self

  def eps(self, x, t: int, cond, drop):
    out = self.denoise(x, torch.full((x.shape[0],), t), cond, drop)
    if self.prediction == "eps":
      return out
    return self.schedule.s1m[t] * x + self.schedule.sa[t] * out  # v -> eps

  def cfg_eps(self, x, t: int, cond, cfg_scale: float):
    b = x.shape[0]
    drop = torch.arange(2 * b) < b  # [null; cond]
    eps_u, eps_c = self.eps(torch.cat([x, x]), t, torch.cat([cond, cond]), drop).chunk(2)
    return eps_u + cfg_scale * (eps_c - eps_u)

  def decode(self, z):
    x = self.vae.decode(z / self.latent_scale)
    return x * self.signal_std[:, None] + self.signal_mean[:, None]

  def sample_latent(self, x, cond, *, num_steps: int, cfg_scale: float):
    """Deterministic DDIM (eta = 0) from x_T (B, 4, 128)."""
    sa, s1m = self.schedule.sa, self.schedule.s1m
    for t, t_prev in ddim_timesteps(len(self.schedule), num_steps):
      eps = self.cfg_eps(x, t, cond, cfg_scale)
      x0 = (x - s1m[t] * eps) / sa[t]
      x = x0 if t_prev < 0 else sa[t_prev] * x0 + s1m[t_prev] * eps
    return x

  def sample(self, x_T, cond, *, num_steps: int, cfg_scale: float):
    return self.decode(self.sample_latent(x_T, cond, num_steps=num_steps, cfg_scale=cfg_scale))


def generator_from_flax(cfg, params, schedule: Schedule | None = None) -> TorchGenerator:
  """A twin of `ecgjax.diffusion.generator.build(cfg)` carrying `params` (the export tree)."""
  unet = load_flax_params(TorchUNet(**cfg.unet), params["unet"])
  vae = load_flax_params(TorchVAE(**cfg.vae), params["vae"])
  schedule = schedule or Schedule.linear(cfg.diffusion.num_timesteps)
  gen = TorchGenerator(unet, vae, schedule, cfg.diffusion.prediction)
  return gen.load_stats(params).eval()


# ------------------------------------------------------------------ training


def adamw(params, lr: float, weight_decay: float):
  """torch's AdamW with optax's defaults (b1 0.9, b2 0.999, eps 1e-8), multi-tensor."""
  return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=True)


def vae_train_step(vae: TorchVAE, opt, kl_weight: float = 1e-4, grad_clip: float = 1.0):
  """One step of ecgjax.train.generator.make_vae_step: MSE + KL, clip, AdamW."""
  latent_size = None

  def step(x):
    nonlocal latent_size
    opt.zero_grad(set_to_none=True)
    recon, mean, logvar = vae(x, sample=True)
    latent_size = latent_size or mean[0].numel()
    kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).flatten(1).sum(1).mean()
    loss = F.mse_loss(recon, x) + kl_weight * kl / latent_size
    loss.backward()
    torch.nn.utils.clip_grad_norm_(vae.parameters(), grad_clip, foreach=True)
    opt.step()
    return loss

  return step


def unet_train_step(
  unet: TorchUNet,
  opt,
  schedule: Schedule,
  ema: list[torch.Tensor],
  *,
  p_uncond: float = 0.1,
  ema_decay: float = 0.999,
  grad_clip: float = 1.0,
):
  """One step of ecgjax.train.generator.make_unet_step: v-prediction MSE with
  condition dropout, clip, AdamW, EMA of the weights."""
  params = [p for p in unet.parameters()]

  def step(z, cond):
    b = z.shape[0]
    t = torch.randint(0, len(schedule), (b,))
    noise = torch.randn_like(z)
    drop = torch.rand(b) < p_uncond
    sa, s1m = schedule.sa[t][:, None, None], schedule.s1m[t][:, None, None]
    x_t = sa * z + s1m * noise
    opt.zero_grad(set_to_none=True)
    loss = F.mse_loss(unet(x_t, t, cond, drop), sa * noise - s1m * z)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, grad_clip, foreach=True)
    opt.step()
    with torch.no_grad():
      torch._foreach_lerp_(ema, params, 1.0 - ema_decay)
    return loss

  return step
