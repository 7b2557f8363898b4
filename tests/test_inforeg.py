import jax
import jax.numpy as jnp
import numpy as np
import pytest
from balance_toys import logits_with_confidence

import mmreg
from mmreg import monitors

SHAPES = {("encoders", "a", "kernel"): (3, 2), ("encoders", "a", "bias"): (2,),
          ("encoders", "b", "kernel"): (4, 3), ("encoders", "b", "bias"): (3,),
          ("head", "kernel"): (5, 3)}
LABELS = {"encoders": {"a": {"kernel": "a", "bias": "a"}, "b": {"kernel": "b", "bias": "b"}},
          "head": {"kernel": "head"}}


def _nest(values):
  out = {"encoders": {"a": {}, "b": {}}, "head": {}}
  for path, v in values.items():
    node = out
    for k in path[:-1]:
      node = node[k]
    node[path[-1]] = jnp.asarray(v, jnp.float32)
  return out


def _flat(tree):
  out = {}
  for path in SHAPES:
    node = tree
    for k in path:
      node = node[k]
    out[path] = np.asarray(node, np.float64)
  return out


def _softmax(z):
  e = np.exp(z - z.max(1, keepdims=True))
  return e / e.sum(1, keepdims=True)


def oracle_inforeg(steps, window=10):
  """GeWu-Lab/InfoReg_CVPR2025:main.py, transcribed: k per epoch (l. 237-243) from the audio
  trace list zero-padded with 10 entries (l. 694), batch-sum scores (l. 460-461), strengths 0.95
  / 0.1 (l. 465-484), the pull on every encoder tensor (l. 489-495), the trace of grad² of the
  weight tensors after the pull (l. 501-514, 569-572). Audio = modality "a".

  `steps`: list of (epoch, grads, params, out_a, out_v, label), grads/params {path: array}.
  Returns the pulled gradients of every step and k of every epoch."""
  audio_trace_list = [0] * window
  outputs, ks = [], {}
  epochs = sorted({s[0] for s in steps})
  for epoch in epochs:
    if epoch == 0:
      k = 1
    else:
      tr1 = sum(audio_trace_list[-window:]) / window
      tr2 = sum(audio_trace_list[-window - 1:-1]) / window
      k = (tr1 - tr2) / tr1
    ks[epoch] = k
    epoch_steps = [s for s in steps if s[0] == epoch]
    global_model = epoch_steps[0][2]
    fim_audio = {p: np.zeros(s) for p, s in SHAPES.items() if p[1] == "a" and len(s) >= 2}
    for _, grads, params, out_a, out_v, label in epoch_steps:
      score_v = sum(_softmax(out_v)[i][label[i]] for i in range(out_v.shape[0]))
      score_a = sum(_softmax(out_a)[i][label[i]] for i in range(out_a.shape[0]))
      if score_a > score_v and k > 0.05:
        beta, beta2 = 0.95 * np.exp(np.tanh(score_a - score_v)), 0
      elif score_a < score_v and k > 0.05:
        beta, beta2 = 0, 0.1 * np.exp(np.tanh(score_v - score_a))
      else:
        beta, beta2 = 0, 0
      new = dict(grads)
      for path in SHAPES:
        if path[:2] == ("encoders", "a"):
          new[path] = grads[path] + beta * (params[path] - global_model[path])
        if path[:2] == ("encoders", "b"):
          new[path] = grads[path] + beta2 * (params[path] - global_model[path])
      for path in fim_audio:
        fim_audio[path] += new[path] * new[path]
      outputs.append(new)
    audio_trace_list.append(sum(f.mean() for f in fim_audio.values()))
  return outputs, ks


def _run(tx, steps):
  state = tx.init(_nest(steps[0][2]))
  update = jax.jit(tx.update)
  outs = []
  for epoch, grads, params, out_a, out_v, label in steps:
    out, state = update(_nest(grads), state, _nest(params), epoch=jnp.asarray(epoch),
                           modality_logits={"a": jnp.asarray(out_a, jnp.float32),
                                            "b": jnp.asarray(out_v, jnp.float32)},
                           labels=jnp.asarray(label))
    outs.append((_flat(out), state))
  return outs


def _steps(rng, epochs, per_epoch, scales, logit_scale=(1.0, 1.0)):
  steps, base = [], {p: rng.normal(size=s) for p, s in SHAPES.items()}
  for e in range(epochs):
    for j in range(per_epoch):
      grads = {p: scales[e] * rng.normal(size=s) for p, s in SHAPES.items()}
      params = {p: base[p] + 0.1 * (e * per_epoch + j) * rng.normal(size=s)
                for p, s in SHAPES.items()}
      label = rng.integers(0, 3, 8)
      steps.append((e, grads, params, logit_scale[0] * rng.normal(size=(8, 3)),
                    logit_scale[1] * rng.normal(size=(8, 3)), label))
  return steps


@pytest.mark.parametrize("logit_scale", [(3.0, 0.3), (0.3, 3.0), (1.0, 1.0)])
def test_authors_variant_matches_the_code_over_epochs(logit_scale):
  rng = np.random.default_rng(0)
  # Falling gradients: k = 1, 1, 0.2, < 0 with W = 2, so the window closes in the last epoch.
  steps = _steps(rng, 4, 3, [4.0, 2.0, 1.0, 0.5], logit_scale)
  want, ks = oracle_inforeg(steps, window=2)
  got = _run(mmreg.inforeg(LABELS, window=2), steps)
  for (out, state), ref, step in zip(got, want, steps, strict=True):
    for path in SHAPES:
      np.testing.assert_allclose(out[path], ref[path], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.diagnostics["k"][0], ks[step[0]], rtol=1e-4, atol=1e-6)
  assert ks[3] < 0.05 < ks[2]
  betas = [float(s.diagnostics["beta"]) for _, s in got]
  assert all(b == 0 for b in betas[9:])  # window closed in epoch 3
  if logit_scale != (1.0, 1.0):
    assert all(b > 0 for b in betas[:9])


def test_strength_is_asymmetric_and_scores_are_sums(rng):
  p0 = {p: rng.normal(size=s) for p, s in SHAPES.items()}
  p1 = {p: v + 1.0 for p, v in p0.items()}
  g = {p: np.zeros(s) for p, s in SHAPES.items()}
  for conf, dom, c in (([0.7, 0.4], "a", 0.95), ([0.4, 0.7], "b", 0.1)):
    logits, y = logits_with_confidence(conf, batch=6)
    tx = mmreg.inforeg(LABELS)
    state = tx.init(_nest(p0))
    kw = dict(epoch=0, modality_logits=logits, labels=y)
    _, state = tx.update(_nest(g), state, _nest(p0), **kw)
    out, state = tx.update(_nest(g), state, _nest(p1), **kw)
    beta = c * np.exp(np.tanh(6 * 0.3))  # batch sums: gap = 6 × 0.3
    np.testing.assert_allclose(float(state.diagnostics["beta"]), beta, rtol=1e-5)
    for path, v in _flat(out).items():
      np.testing.assert_allclose(v, beta if path[:2] == ("encoders", dom) else 0.0, rtol=1e-5)


def test_first_modality_window_drives_both():
  # Modality b's trace falls, a's rises: the authors' variant follows a (still regulating b);
  # the symmetric variant closes b's own window.
  rng = np.random.default_rng(1)
  steps = []
  base = {p: rng.normal(size=s) for p, s in SHAPES.items()}
  logits, y = logits_with_confidence([0.4, 0.7])
  for e in range(5):
    grads = {p: (2.0 ** e if p[1] == "a" else 2.0 ** -e) * np.ones(s) for p, s in SHAPES.items()}
    params = {p: v + e + 1 for p, v in base.items()}
    steps.append((e, grads, params, np.asarray(logits["a"]), np.asarray(logits["b"]),
                  np.asarray(y)))
  authors = _run(mmreg.inforeg(LABELS, window=1), steps)
  symmetric = _run(mmreg.inforeg(LABELS, window=1, variant="symmetric"), steps)
  assert float(authors[-1][1].diagnostics["beta"]) > 0
  assert float(symmetric[-1][1].diagnostics["beta"]) == 0.0
  assert float(symmetric[-1][1].diagnostics["k"][1]) < 0.05


def test_symmetric_variant_matches_numpy(rng):
  p0 = {p: rng.normal(size=s) for p, s in SHAPES.items()}
  p1 = {p: rng.normal(size=s) for p, s in SHAPES.items()}
  g = {p: rng.normal(size=s) for p, s in SHAPES.items()}
  logits, y = logits_with_confidence([0.4, 0.7])
  tx = mmreg.inforeg(LABELS, variant="symmetric", strength=0.3, window=2)
  state = tx.init(_nest(p0))
  kw = dict(epoch=0, modality_logits=logits, labels=y)
  _, state = tx.update(_nest(g), state, _nest(p0), **kw)
  out, state = tx.update(_nest(g), state, _nest(p1), **kw)
  beta = 0.3 * np.exp(np.tanh(0.3))  # batch means
  for path, v in _flat(out).items():
    pull = beta * (p1[path] - p0[path]) if path[:2] == ("encoders", "b") else 0.0
    np.testing.assert_allclose(v, g[path] + pull, rtol=1e-5)
  trace = [sum(np.sum(g[p] ** 2) for p in SHAPES if p[1] == m) for m in "ab"]
  np.testing.assert_allclose(state.diagnostics["trace"], trace, rtol=1e-5)
  np.testing.assert_array_equal(state.diagnostics["k"], [1.0, 1.0])  # window not full yet


def test_tie_and_diagnostics_finite_from_the_first_step(rng):
  p0 = {p: rng.normal(size=s) for p, s in SHAPES.items()}
  g = {p: rng.normal(size=s) for p, s in SHAPES.items()}
  tie, y = logits_with_confidence([0.5, 0.5])
  for variant in ("authors", "symmetric"):
    tx = mmreg.inforeg(LABELS, variant=variant)
    state = tx.init(_nest(p0))
    for epoch in range(3):
      p = {k: v + epoch + 1 for k, v in p0.items()}
      out, state = tx.update(_nest(g), state, _nest(p), epoch=epoch, modality_logits=tie,
                             labels=y)
      for path, v in _flat(out).items():
        np.testing.assert_array_equal(v, np.asarray(g[path], np.float32))
      for leaf in jax.tree.leaves(state.diagnostics):
        assert np.all(np.isfinite(np.asarray(leaf)))


def test_fisher_window_padding_and_reductions():
  state = monitors.fisher_window_init(1, 2)
  _, sig = monitors.fisher_window_update(state, jnp.asarray([3.0]), 0)
  assert float(sig.k[0]) == 1.0 and bool(sig.in_window[0])  # first epoch: k = 1
  traces = {0: [3.0, 1.0], 1: [2.0, 2.0], 2: [1.0, 1.0]}
  for epoch, values in traces.items():
    for v in values:
      state, sig = monitors.fisher_window_update(state, jnp.asarray([v]), epoch)
  # Entering epoch 3: history 0, 0 | 4, 4, 2 (sums); k = (mean(4, 2) − mean(4, 4)) / mean(4, 2).
  state = monitors.fisher_window_advance(state, 3)
  sig = monitors.fisher_window_signal(state)
  np.testing.assert_allclose(sig.k, [(3.0 - 4.0) / 3.0], rtol=1e-6)
  mean_state = monitors.fisher_window_init(1, 2, pad_history=False, epoch_reduction="mean")
  for epoch, values in traces.items():
    for v in values:
      mean_state, sig = monitors.fisher_window_update(mean_state, jnp.asarray([v]), epoch)
  assert float(sig.k[0]) == 1.0  # two epochs complete < W + 1
  mean_state = monitors.fisher_window_advance(mean_state, 3)
  np.testing.assert_allclose(monitors.fisher_window_signal(mean_state).k, [(1.5 - 2.0) / 1.5],
                             rtol=1e-6)
  zero = monitors.fisher_window_advance(
      monitors.fisher_window_add(monitors.fisher_window_init(1, 2), jnp.zeros(1)), 1)
  assert float(monitors.fisher_window_signal(zero).k[0]) == 0.0  # all-zero traces: k = 0
  huge = monitors.fisher_window_init(1, 1)
  for epoch in range(3):
    huge, sig = monitors.fisher_window_update(huge, jnp.asarray([3e38]), epoch)
    huge, sig = monitors.fisher_window_update(huge, jnp.asarray([3e38]), epoch)
  assert np.all(np.isfinite(sig.k))
  with pytest.raises(ValueError, match="unknown epoch_reduction"):
    monitors.fisher_window_init(1, 2, epoch_reduction="max")


def test_errors(rng):
  g = _nest({p: rng.normal(size=s) for p, s in SHAPES.items()})
  logits, y = logits_with_confidence([0.4, 0.7])
  tx = mmreg.inforeg(LABELS)
  with pytest.raises(ValueError, match="`epoch` extra"):
    tx.update(g, tx.init(g), g, modality_logits=logits, labels=y)
  with pytest.raises(ValueError, match="`modality_logits` and `labels`"):
    tx.update(g, tx.init(g), g, epoch=0)
  with pytest.raises(ValueError, match="unknown variant 'paper'"):
    mmreg.inforeg(LABELS, variant="paper")
  with pytest.raises(ValueError, match="strength has 3 values for 2 modalities"):
    mmreg.inforeg(LABELS, strength=(1.0, 2.0, 3.0)).init(g)
