import jax
import numpy as np
import pytest
from balance_toys import (
  add,
  flat,
  flat_labels,
  labels,
  loss_grads,
  tree,
)

import mmreg


def test_dgl_routes_losses_to_parameters(rng):
  rows = {"fused": tree(rng), "a": tree(rng), "b": tree(rng)}
  total = add(rows["fused"], jax.tree.map(lambda x: 2.0 * x, rows["a"]), rows["b"])  # Σ w_k g_k
  tx = mmreg.dgl(labels(), alpha=1.0, loss_weights={"a": 2.0})
  out, _ = tx.update(total, tx.init(total), loss_grads=loss_grads(rows))
  for path, lab in flat_labels().items():
    want = {"a": 2.0 * flat(rows["a"])[path], "b": flat(rows["b"])[path],
            "fusion": flat(rows["fused"])[path], "head": flat(rows["fused"])[path]}[lab]
    np.testing.assert_allclose(flat(out)[path], want, rtol=1e-6)


def test_dgl_missing_route_loss(rng):
  g = tree(rng)
  tx = mmreg.dgl(labels())
  with pytest.raises(ValueError, match=r"needs the gradients of losses \['b'\]"):
    tx.update(g, tx.init(g), loss_grads=loss_grads({"fused": g, "a": g}))
