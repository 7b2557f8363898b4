import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from balance_toys import logits_with_confidence

import mmreg

# A tree with every kind of encoder tensor: conv kernel (4-D), dense kernel (2-D), bias (1-D).
SHAPES = {("encoders", "a", "conv"): (3, 3, 2, 4), ("encoders", "a", "kernel"): (4, 5),
          ("encoders", "a", "bias"): (5,), ("encoders", "b", "kernel"): (6, 5),
          ("encoders", "b", "bias"): (5,), ("head", "kernel"): (10, 3)}


def _tree(rng, scale=1.0):
  out = {"encoders": {"a": {}, "b": {}}, "head": {}}
  for path, shape in SHAPES.items():
    node = out
    for k in path[:-1]:
      node = node[k]
    node[path[-1]] = jnp.asarray(scale * rng.normal(size=shape), jnp.float32)
  return out


def _labels():
  return {"encoders": {"a": {k: "a" for k in ("conv", "kernel", "bias")},
                       "b": {k: "b" for k in ("kernel", "bias")}}, "head": {"kernel": "head"}}


def _get(t, path):
  for k in path:
    t = t[k]
  return np.asarray(t, np.float64)


def _softmax(z):
  e = np.exp(z - z.max(1, keepdims=True))
  return e / e.sum(1, keepdims=True)


def oracle_coefficients(out_a, out_v, label, alpha):
  """GeWu-Lab/OGM-GE_CVPR2022:main.py:105-124, transcribed (audio = first modality)."""
  score_v = sum(_softmax(out_v)[i][label[i]] for i in range(out_v.shape[0]))
  score_a = sum(_softmax(out_a)[i][label[i]] for i in range(out_a.shape[0]))
  ratio_v = score_v / score_a
  ratio_a = 1 / ratio_v
  if ratio_v > 1:
    coeff_v = 1 - np.tanh(alpha * max(ratio_v, 0))
    coeff_a = 1
  else:
    coeff_a = 1 - np.tanh(alpha * max(ratio_a, 0))
    coeff_v = 1
  return np.array([coeff_a, coeff_v]), np.array([ratio_a, ratio_v])


def _random_logits(rng, scale=1.0, batch=16, classes=4):
  y = rng.integers(0, classes, batch)
  return ({m: jnp.asarray(scale * rng.normal(size=(batch, classes)), jnp.float32) for m in "ab"},
          jnp.asarray(y, jnp.int32))


@pytest.mark.parametrize("seed", range(6))
def test_authors_coefficients_match_the_code_on_random_logits(seed):
  rng = np.random.default_rng(seed)
  logits, y = _random_logits(rng, scale=[0.5, 1.0, 3.0, 1.0, 2.0, 0.1][seed])
  alpha = [0.8, 0.1, 0.8, 0.3, 1.5, 0.8][seed]
  want_k, want_rho = oracle_coefficients(np.asarray(logits["a"], np.float64),
                                         np.asarray(logits["b"], np.float64), np.asarray(y),
                                         alpha)
  g = _tree(rng)
  tx = mmreg.ogm_ge(_labels(), alpha=alpha, generalization_enhancement=False)
  out, state = tx.update(g, tx.init(g), modality_logits=logits, labels=y)
  np.testing.assert_allclose(state.diagnostics["coefficient"], want_k, rtol=1e-5)
  np.testing.assert_allclose(state.diagnostics["ratio"], want_rho, rtol=1e-5)
  for path in SHAPES:  # default: tensors with ndim >= 2 of each encoder
    lab = path[1] if path[0] == "encoders" else None
    factor = want_k["ab".index(lab)] if lab and len(SHAPES[path]) >= 2 else 1.0
    np.testing.assert_allclose(_get(out, path), factor * _get(g, path), rtol=1e-5)


def test_pinned_values_from_the_issue():
  # rho = 1.5, alpha = 0.8: the code's 1 - tanh(1.2) = 0.166; the shifted form gives 0.620.
  k, rho = mmreg.ogm_coefficients(jnp.asarray([0.9, 0.6]), 0.8)
  np.testing.assert_allclose(rho, [1.5, 1 / 1.5], rtol=1e-6)
  np.testing.assert_allclose(k, [1 - np.tanh(1.2), 1.0], rtol=1e-6)
  assert abs(float(k[0]) - 0.1663) < 1e-4
  k_shift, _ = mmreg.ogm_coefficients(jnp.asarray([0.9, 0.6]), 0.8, "shifted")
  np.testing.assert_allclose(k_shift, [1 - np.tanh(0.4), 1.0], rtol=1e-6)
  assert abs(float(k_shift[0]) - 0.6201) < 1e-4


def test_tie_modulates_the_first_modality_as_the_code():
  logits, y = logits_with_confidence([0.5, 0.5])
  want, _ = oracle_coefficients(np.asarray(logits["a"], np.float64),
                                np.asarray(logits["b"], np.float64), np.asarray(y), 0.8)
  np.testing.assert_allclose(want, [1 - np.tanh(0.8), 1.0])
  k, rho = mmreg.ogm_coefficients(jnp.asarray([0.5, 0.5]), 0.8)
  np.testing.assert_allclose(k, want, rtol=1e-6)
  np.testing.assert_allclose(rho, [1.0, 1.0])
  k_shift, _ = mmreg.ogm_coefficients(jnp.asarray([0.5, 0.5]), 0.8, "shifted")
  np.testing.assert_allclose(k_shift, [1.0, 1.0])


@pytest.mark.parametrize("scale", [1e-30, 1e30])
def test_extreme_logit_scales_stay_finite(scale):
  rng = np.random.default_rng(3)
  logits, y = _random_logits(rng, scale=scale)
  g = _tree(rng)
  tx = mmreg.ogm_ge(_labels(), generalization_enhancement=False)
  out, state = tx.update(g, tx.init(g), modality_logits=logits, labels=y)
  for leaf in jax.tree.leaves((out, state.diagnostics)):
    assert np.all(np.isfinite(np.asarray(leaf)))
  if scale == 1e-30:  # all probabilities 1/K: a tie, the first modality is modulated
    np.testing.assert_allclose(state.diagnostics["coefficient"], [1 - np.tanh(0.8), 1.0],
                               rtol=1e-5)
  # Both scores 0 (the code divides 0 by 0): rho = 0, k = 1.
  k, rho = mmreg.ogm_coefficients(jnp.zeros(2), 0.8)
  np.testing.assert_allclose(k, [1.0, 1.0])
  np.testing.assert_allclose(rho, [0.0, 0.0])


def test_three_modalities_ratio_to_mean_of_others():
  k, rho = mmreg.ogm_coefficients(jnp.asarray([0.9, 0.5, 0.3]), 0.5)
  np.testing.assert_allclose(rho, [0.9 / 0.4, 0.5 / 0.6, 0.3 / 0.7], rtol=1e-6)
  np.testing.assert_allclose(k, [1 - np.tanh(0.5 * 0.9 / 0.4), 1.0, 1.0], rtol=1e-6)
  k, _ = mmreg.ogm_coefficients(jnp.asarray([0.9, 0.8, 0.1]), 0.5)  # two above the others
  np.testing.assert_allclose(k, [1 - np.tanh(0.5 * 0.9 / 0.45), 1 - np.tanh(0.5 * 0.8 / 0.5),
                                 1.0], rtol=1e-6)
  k, _ = mmreg.ogm_coefficients(jnp.full((3,), 0.4), 0.5)  # all tie: the first
  np.testing.assert_allclose(k, [1 - np.tanh(0.5), 1.0, 1.0], rtol=1e-6)


@pytest.mark.parametrize("modulated, ndims", [("weights", (2, 4)), ("conv_kernels", (4,)),
                                              ("all", (1, 2, 4))])
def test_modulated_tensors(rng, modulated, ndims):
  g = _tree(rng)
  logits, y = logits_with_confidence([0.9, 0.6])
  tx = mmreg.ogm_ge(_labels(), modulated=modulated, generalization_enhancement=False)
  out, _ = tx.update(g, tx.init(g), modality_logits=logits, labels=y)
  k_a = 1 - np.tanh(0.8 * 1.5)
  for path, shape in SHAPES.items():
    factor = k_a if path[:2] == ("encoders", "a") and len(shape) in ndims else 1.0
    np.testing.assert_allclose(_get(out, path), factor * _get(g, path), rtol=1e-6)


def test_generalisation_noise_has_gradient_std():
  big = {"encoders": {"a": {"w": jnp.asarray(np.random.default_rng(1).normal(size=(80, 50)) * 3,
                                             jnp.float32)},
                      "b": {"w": jnp.zeros((3, 2), jnp.float32),
                            "bias": jnp.ones((2,), jnp.float32)}}}
  labs = {"encoders": {"a": {"w": "a"}, "b": {"w": "b", "bias": "b"}}}
  logits, y = logits_with_confidence([0.9, 0.6])
  tx = mmreg.ogm_ge(labs, alpha=0.8)
  out, _ = tx.update(big, tx.init(big), modality_logits=logits, labels=y,
                     key=jax.random.PRNGKey(0))
  k = 1 - np.tanh(0.8 * 1.5)
  g = np.asarray(big["encoders"]["a"]["w"])
  noise = np.asarray(out["encoders"]["a"]["w"]) - k * g
  # main.py:139: normal_(0, grad.std() + 1e-8), torch.std unbiased.
  np.testing.assert_allclose(noise.std(), g.std(ddof=1), rtol=0.05)
  # A zero gradient gets noise of std 1e-8 only; the bias (1-D) is not touched.
  assert np.all(np.abs(np.asarray(out["encoders"]["b"]["w"])) < 1e-6)
  np.testing.assert_array_equal(out["encoders"]["b"]["bias"], big["encoders"]["b"]["bias"])


def test_epoch_window_is_inclusive_and_no_op_outside(rng):
  g = _tree(rng)
  logits, y = logits_with_confidence([0.9, 0.6])
  tx = mmreg.ogm_ge(_labels(), start_epoch=2, end_epoch=4, generalization_enhancement=False)
  state = tx.init(g)
  path = ("encoders", "a", "kernel")
  for epoch, active in ((1, False), (2, True), (4, True), (5, False)):
    out, state = tx.update(g, state, modality_logits=logits, labels=y, epoch=epoch)
    assert (not np.allclose(_get(out, path), _get(g, path))) == active
  with pytest.raises(ValueError, match="`epoch` extra"):
    tx.update(g, state, modality_logits=logits, labels=y)


def test_inject_hyperparams_schedules_alpha(rng):
  g = _tree(rng)
  logits, y = logits_with_confidence([0.9, 0.6])
  tx = optax.inject_hyperparams(mmreg.ogm_ge, static_args=("param_labels",))(
      param_labels=_labels(), alpha=optax.linear_schedule(0.0, 1.0, 10),
      generalization_enhancement=False)
  state = tx.init(g)
  path = ("encoders", "a", "kernel")
  out, state = tx.update(g, state, modality_logits=logits, labels=y)  # alpha = 0: no-op
  np.testing.assert_allclose(_get(out, path), _get(g, path))
  for _ in range(4):
    out, state = tx.update(g, state, modality_logits=logits, labels=y)
  np.testing.assert_allclose(_get(out, path), (1 - np.tanh(0.4 * 1.5)) * _get(g, path),
                             rtol=1e-5)


def test_bad_input_errors(rng):
  g = _tree(rng)
  logits, y = logits_with_confidence([0.9, 0.6])
  with pytest.raises(ValueError, match="param_labels do not match"):
    mmreg.ogm_ge({"encoders": {"a": {"w": "a"}}}).init(g)
  tx = mmreg.ogm_ge(_labels())
  with pytest.raises(ValueError, match=r"no entry for \['b'\]"):
    tx.update(g, tx.init(g), modality_logits={"a": logits["a"]}, labels=y)
  with pytest.raises(ValueError, match="at least 2 modalities"):
    mmreg.ogm_ge(_labels(), modalities=("a",)).init(g)
  with pytest.raises(ValueError, match="unknown coefficient 'paper'"):
    mmreg.ogm_ge(_labels(), coefficient="paper")
  with pytest.raises(ValueError, match="unknown modulated 'bias'"):
    mmreg.ogm_ge(_labels(), modulated="bias")
