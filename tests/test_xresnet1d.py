"""XResNet1d: size, equivalence of the conv implementations, parity with an
independent PyTorch twin (tests/torch_xresnet1d.py), and a short training run.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import XLA_DEFAULT, run_at_xla_default

from ecgjax.models import xresnet1d
from ecgjax.models.xresnet1d import count_params, xresnet1d50, xresnet1d101

# Small but structurally complete: every stage changes width (so every first
# block has a projection shortcut), stage 1 has an identity block, and L=100
# gives odd lengths (25, 13, 7) that exercise the ceil-mode shortcut pool.
TINY = dict(
  layers=(2, 1, 1, 1), widths=(4, 6, 8, 8), stem_widths=(8, 8, 16), head_hidden=16, num_classes=5
)
TINY_LEN = 100


def _randomise_bn(variables, seed):
  """Non-trivial BN statistics and affine parameters everywhere.

  Zero-initialised gammas and unit/zero running statistics would make many
  bugs (a swapped mean/var, a missing BN, a mis-ordered block) invisible.
  """
  rng = np.random.RandomState(seed)

  def fill(path, leaf):
    name = path[-1].key
    shape = leaf.shape
    if name == "mean":
      return jnp.asarray(rng.randn(*shape) * 0.3, jnp.float32)
    if name == "var":
      return jnp.asarray(rng.uniform(0.5, 2.0, shape), jnp.float32)
    if name == "scale":
      return jnp.asarray(rng.uniform(0.5, 1.5, shape), jnp.float32)
    if name == "bias":
      return jnp.asarray(rng.randn(*shape) * 0.1, jnp.float32)
    return leaf

  return jax.tree_util.tree_map_with_path(fill, variables)


def _init(model, length, seed=0):
  return model.init(jax.random.PRNGKey(seed), jnp.zeros((1, 12, length)), train=False)


def test_xresnet1d50_has_benchmark_parameter_count():
  assert count_params(xresnet1d50(num_classes=71)) == 962_503


def test_xresnet1d101_is_larger():
  n50, n101 = count_params(xresnet1d50()), count_params(xresnet1d101())
  print(f"xresnet1d50: {n50:,} params, xresnet1d101: {n101:,} params")
  assert n101 > n50


def test_shapes_and_batch_stats_layout():
  model = xresnet1d50()
  shapes = jax.eval_shape(lambda: _init(model, 1000))
  out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((3, 12, 1000)), train=False), shapes)
  assert out.shape == (3, 71) and out.dtype == jnp.float32
  assert set(shapes) == {"params", "batch_stats"}
  assert shapes["params"]["stem_0"]["kernel"].shape == (5, 12, 32)  # (K, Cin, Cout)
  # Only the first block changes channels (64 -> 256); later stages keep 256.
  assert "idconv" in shapes["params"]["stage1_block0"]
  assert "idconv" not in shapes["params"]["stage2_block0"]


def test_rejects_channels_last_2d_input():
  with pytest.raises(ValueError, match="batch, leads, length"):
    xresnet1d50().init(jax.random.PRNGKey(0), jnp.zeros((12, 1000)), train=False)


_NODE = "test_conv_impls_agree_in_value_and_gradient"


# One worker runs both cases under `pytest -n 2 --dist loadgroup`: each compiles the same
# 'fast' reference, which the second then reads from XLA's persistent cache (on two workers
# at once, both compiled it).
@pytest.mark.xdist_group("conv_impls")
@pytest.mark.parametrize("conv_impl,materialize", [("xla", False), ("matmul", True)])
def test_conv_impls_agree_in_value_and_gradient(conv_impl, materialize):
  """'fast' uses a hand-written VJP and `materialize`; autodiff is the oracle. XLA's own
  convolution autodiff is compiled at XLA's default level (see conftest.TEST_XLA_FLAGS)."""
  if conv_impl == "xla" and not XLA_DEFAULT:
    run_at_xla_default(f"tests/test_xresnet1d.py::{_NODE}[{conv_impl}-{materialize}]")
    return
  rng = np.random.RandomState(1)
  x = jnp.asarray(rng.randn(4, 12, TINY_LEN), jnp.float32)
  w = jnp.asarray(rng.randn(4, TINY["num_classes"]), jnp.float32)
  variables = _randomise_bn(_init(xresnet1d.XResNet1d(**TINY), TINY_LEN), 2)

  def loss_and_grad(model):
    def loss(params):
      logits, upd = model.apply(
        {"params": params, "batch_stats": variables["batch_stats"]},
        x,
        train=True,
        mutable=["batch_stats"],
        rngs={"dropout": jax.random.PRNGKey(3)},
      )
      return jnp.sum(logits * w), (logits, upd)

    return jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])

  (_, out_fast), g_fast = loss_and_grad(xresnet1d.XResNet1d(**TINY, materialize=True))
  (_, out_ref), g_ref = loss_and_grad(
    xresnet1d.XResNet1d(**TINY, conv_impl=conv_impl, materialize=materialize)
  )
  # Train-mode BN over few samples amplifies float32 rounding; bounds are
  # relative to each tensor's largest entry.
  for a, b in zip(
    jax.tree_util.tree_leaves((out_fast, g_fast)), jax.tree_util.tree_leaves((out_ref, g_ref))
  ):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4 * float(jnp.abs(b).max()) + 1e-7)


def test_bfloat16_compute_keeps_float32_state():
  variables = _randomise_bn(_init(xresnet1d.XResNet1d(**TINY), TINY_LEN), 5)
  x = jnp.asarray(np.random.RandomState(0).randn(4, 12, TINY_LEN), jnp.float32)
  bf16 = xresnet1d.XResNet1d(**TINY, dtype=jnp.bfloat16)
  # Eval mode: well conditioned, so bf16 must stay close to float32.
  ours = jax.jit(functools.partial(bf16.apply, train=False))(variables, x)
  ref = jax.jit(functools.partial(xresnet1d.XResNet1d(**TINY).apply, train=False))(variables, x)
  assert ours.dtype == jnp.float32
  np.testing.assert_allclose(ours, ref, atol=0.05 * float(jnp.abs(ref).max()))

  def loss(params):
    logits, upd = bf16.apply(
      {"params": params, "batch_stats": variables["batch_stats"]},
      x,
      train=True,
      mutable=["batch_stats"],
      rngs={"dropout": jax.random.PRNGKey(0)},
    )
    return jnp.sum(logits**2), upd

  grads, upd = jax.jit(jax.grad(loss, has_aux=True))(variables["params"])
  leaves = jax.tree_util.tree_leaves((grads, upd))
  assert all(leaf.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(leaf))) for leaf in leaves)


# ----------------------------------------------------------------- PyTorch twin


def _torch():
  """(torch, twin module); skips when torch is absent."""
  torch = pytest.importorskip(
    "torch", reason="PyTorch is optional (pip install .[torch]); parity tests need it"
  )
  try:
    import torch_xresnet1d as twin  # tests/ on sys.path (rootdir-less layout)
  except ImportError:
    from tests import torch_xresnet1d as twin
  return torch, twin


def test_eval_parity_with_torch_twin_full_size():
  torch, twin_mod = _torch()
  TorchXResNet1d, load_flax_variables = twin_mod.TorchXResNet1d, twin_mod.load_flax_variables

  model = xresnet1d50()
  variables = _randomise_bn(_init(model, 1000), seed=1)
  x = np.random.RandomState(0).randn(4, 12, 1000).astype(np.float32)
  ours = np.asarray(jax.jit(functools.partial(model.apply, train=False))(variables, x))

  twin = load_flax_variables(TorchXResNet1d(), variables).eval()
  with torch.no_grad():
    theirs = twin(torch.from_numpy(x)).numpy()
  err = np.abs(ours - theirs)
  scale = np.abs(theirs).max()
  print(f"max abs err {err.max():.3g}, max err / max|logit| {err.max() / scale:.3g}")
  np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5 * scale)


def test_train_mode_parity_with_torch_twin():
  """Batch statistics, running-stat updates (unbiased var) and gradients."""
  torch, twin_mod = _torch()
  TorchXResNet1d, load_flax_variables = twin_mod.TorchXResNet1d, twin_mod.load_flax_variables

  model = xresnet1d.XResNet1d(**TINY, head_dropout=0.0)
  variables = _randomise_bn(_init(model, TINY_LEN), seed=3)
  rng = np.random.RandomState(4)
  x = rng.randn(3, 12, TINY_LEN).astype(np.float32)
  w = rng.randn(3, TINY["num_classes"]).astype(np.float32)

  def loss(params):
    logits, upd = model.apply(
      {"params": params, "batch_stats": variables["batch_stats"]},
      x,
      train=True,
      mutable=["batch_stats"],
    )
    return jnp.sum(logits * w), (logits, upd["batch_stats"])

  (_, (logits, stats)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])

  twin_kwargs = dict(
    layers=TINY["layers"],
    num_classes=TINY["num_classes"],
    widths=TINY["widths"],
    stem=TINY["stem_widths"],
    hidden=TINY["head_hidden"],
    dropout=0.0,
  )
  twin = load_flax_variables(TorchXResNet1d(**twin_kwargs), variables).train()
  out = twin(torch.from_numpy(x))
  (out * torch.from_numpy(w)).sum().backward()
  np.testing.assert_allclose(logits, out.detach().numpy(), rtol=1e-4, atol=1e-4)

  # Load our updated statistics and gradients into a second twin, so both
  # sides are compared in torch's layout, tensor by tensor.
  expect = load_flax_variables(
    TorchXResNet1d(**twin_kwargs), {"params": grads, "batch_stats": stats}
  )
  got_params = dict(twin.named_parameters())
  for name, g in expect.named_parameters():
    ref = got_params[name].grad.numpy()
    np.testing.assert_allclose(
      g.detach().numpy(), ref, rtol=1e-3, atol=1e-4 * np.abs(ref).max() + 1e-6, err_msg=name
    )
  got_buffers = dict(twin.named_buffers())
  for name, buf in expect.named_buffers():
    if name.endswith(("running_mean", "running_var")):
      np.testing.assert_allclose(
        buf.numpy(), got_buffers[name].numpy(), rtol=1e-4, atol=1e-5, err_msg=name
      )


# ------------------------------------------------------------------- training


def test_few_adamw_steps_reduce_loss_and_update_batch_stats():
  model = xresnet1d.XResNet1d(**TINY)
  variables = _init(model, TINY_LEN)
  rng = np.random.RandomState(0)
  x = jnp.asarray(rng.randn(8, 12, TINY_LEN), jnp.float32)
  y = jnp.asarray(rng.rand(8, TINY["num_classes"]) < 0.3, jnp.float32)
  tx = optax.adamw(1e-2, weight_decay=1e-2)

  @functools.partial(jax.jit, donate_argnums=0)
  def step(state, key):
    params, stats, opt = state

    def loss_fn(p):
      logits, upd = model.apply(
        {"params": p, "batch_stats": stats},
        x,
        train=True,
        mutable=["batch_stats"],
        rngs={"dropout": key},
      )
      return optax.sigmoid_binary_cross_entropy(logits, y).mean(), upd["batch_stats"]

    (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt = tx.update(grads, opt, params)
    return (optax.apply_updates(params, updates), new_stats, opt), loss

  stats0 = jax.tree_util.tree_map(np.asarray, variables["batch_stats"])
  state = (variables["params"], variables["batch_stats"], tx.init(variables["params"]))
  losses = []
  for i in range(8):
    state, loss = step(state, jax.random.PRNGKey(i))
    losses.append(float(loss))
  assert losses[-1] < losses[0] * 0.9, losses
  moved = jax.tree_util.tree_map(lambda a, b: not np.allclose(a, b), stats0, state[1])
  assert all(jax.tree_util.tree_leaves(moved))
