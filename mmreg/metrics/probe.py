"""Linear probe: how much label information a frozen representation holds."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax


@functools.partial(jax.jit, static_argnames=("num_classes", "steps"))
def _probe(train_x: jax.Array, train_y: jax.Array, test_x: jax.Array, num_classes: int,
           steps: int, learning_rate: float, weight_decay: float) -> jax.Array:
  scale = jnp.max(jnp.abs(train_x))  # statistics of x/scale: no overflow for any finite x
  scale = jnp.where(scale > 0, scale, 1.0)
  train_x, test_x = train_x / scale, test_x / scale
  mean = train_x.mean(0)
  std = train_x.std(0) + 1e-6
  x, z = (train_x - mean) / std, (test_x - mean) / std
  params = (jnp.zeros((x.shape[1], num_classes)), jnp.zeros(num_classes))
  tx = optax.adam(learning_rate)

  def loss(p):
    logits = x @ p[0] + p[1]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, train_y).mean()
    return ce + 0.5 * weight_decay * jnp.sum(jnp.square(p[0]))

  def body(carry, _):
    p, state = carry
    updates, state = tx.update(jax.grad(loss)(p), state, p)
    return (optax.apply_updates(p, updates), state), None

  (params, _), _ = jax.lax.scan(body, (params, tx.init(params)), None, length=steps)
  return jnp.argmax(z @ params[0] + params[1], -1)


def linear_probe_accuracy(train_features: np.ndarray, train_labels: np.ndarray,
                          test_features: np.ndarray, test_labels: np.ndarray, num_classes: int,
                          *, steps: int = 300, learning_rate: float = 0.05,
                          weight_decay: float = 1e-4) -> np.ndarray:
  """Test accuracy of a multinomial logistic regression fitted on frozen features.

  Features are standardised with the train split's statistics (computed on the features
  divided by their largest magnitude, so any finite features give finite statistics); the
  probe (zero-initialised weights and bias) minimises mean cross-entropy + weight_decay/2·‖W‖²
  by `steps` full-batch Adam steps. A leading axis on both feature arrays (`[R, N, d]`) fits
  one probe per run (vmapped) and returns `[R]` accuracies; `[N, d]` returns a scalar array.
  """
  train_features, test_features = np.asarray(train_features), np.asarray(test_features)
  if train_features.ndim not in (2, 3) or train_features.ndim != test_features.ndim:
    raise ValueError(f"features must be [N, d] or [R, N, d] for both splits, got shapes "
                     f"{train_features.shape} and {test_features.shape}")
  if train_features.shape[-2] != len(train_labels) or test_features.shape[-2] != len(test_labels):
    raise ValueError(f"{train_features.shape[-2]}/{test_features.shape[-2]} feature rows for "
                     f"{len(train_labels)}/{len(test_labels)} labels; pass one row per label")
  probe = functools.partial(_probe, num_classes=num_classes, steps=steps,
                            learning_rate=learning_rate, weight_decay=weight_decay)
  y = jnp.asarray(train_labels)
  if train_features.ndim == 3:
    pred = jax.vmap(lambda a, b: probe(a, y, b))(train_features, test_features)
  else:
    pred = probe(train_features, y, test_features)
  return (np.asarray(pred) == np.asarray(test_labels)).mean(-1)
