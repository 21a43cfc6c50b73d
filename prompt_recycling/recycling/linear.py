"""Linear recyclers of Lester et al. (2022): `v2v-lin` and `lin-comb`.

Both see the source and target embedding tables S [vocab, source_embed] and
T [vocab, target_embed] (row i the same token in both) only through

  G = S^T S   [source_embed, source_embed]   and   C = S^T T   [source_embed, target_embed],

reduced over the vocabulary on the device(s) holding the tables, so neither ever
forms a [vocab, vocab] matrix. The small solve then runs on the host in float64
through the eigendecomposition of G (a pseudo-inverse: a rank-deficient G, e.g.
fewer vocabulary rows than source_embed, gives the minimum-norm solution).

* v2v-lin: W = argmin_W |S W - T|^2 + l2 |W|^2 = (G + l2 I)^+ C, and
  recycled = prompt @ W.
* lin-comb: the prompt as a combination of vocabulary rows, c = argmin |c|
  subject to c S = prompt (least squares if no exact solution), i.e.
  c = prompt @ pinv(S) = prompt (G + l2 I)^+ S^T, [prompt_length, vocab]; the
  recycled prompt is the same combination of the target rows, c T.

Without regularisation the two give the same output (c T = prompt G^+ C), as
the algebra shows; lin-comb also exposes the coefficients (`coefficients`).

The normal equations square S's condition number, and G is accumulated in
float32 on the devices; `refine_steps` rounds of iterative refinement
(W += (G + l2 I)^+ (S^T (T - S W) - l2 W), the residual again reduced on the
devices) win back most of the accuracy a float64 QR of S would give.
"""
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from prompt_recycling.recycling import base

# Eigenvalues of the Gram below RCOND * the largest are treated as zero: G is
# summed in float32, and the null-space eigenvalues of a rank-deficient G come
# out at ~1e-7 of the largest (measured up to 1000 x 4096), so 1e-6 keeps a
# 10x margin. This drops directions where S's singular value is below 1e-3 of
# its largest; pass a smaller rcond for a full-rank but ill-conditioned S.
RCOND = 1e-6


def pinv_psd(gram: np.ndarray, l2: float = 0.0, rcond: float = RCOND) -> np.ndarray:
  """Pseudo-inverse of a symmetric positive semi-definite matrix, in float64.

  Args:
    gram: [embed, embed], e.g. S^T S.
    l2: added to the diagonal before inverting (ridge regularisation).
    rcond: eigenvalues below `rcond` times the largest are dropped.

  Returns:
    (gram + l2 I)^+ [embed, embed] float64.
  """
  gram = np.asarray(gram, np.float64)
  gram = 0.5 * (gram + gram.T) + l2 * np.eye(gram.shape[0])
  eigvals, eigvecs = np.linalg.eigh(gram)
  keep = eigvals > rcond * max(eigvals[-1], 0.0)
  inv = np.where(keep, 1.0 / np.where(keep, eigvals, 1.0), 0.0)
  return (eigvecs * inv) @ eigvecs.T


@jax.jit
def _normal_residual(source, target, w):
  """S^T (T - S W) [source_embed, target_embed], reduced over the (sharded) vocab."""
  residual = target - jnp.matmul(source, w, precision=base.PRECISION)
  return jnp.matmul(source.T, residual, precision=base.PRECISION)


def solve_least_squares(source, target, *, l2: float = 0.0, refine_steps: int = 1,
                        rcond: float = RCOND, mesh: Optional[Mesh] = None) -> np.ndarray:
  """W minimising |source W - target|^2 + l2 |W|^2, via the normal equations.

  Args:
    source: [vocab, source_embed].
    target: [vocab, target_embed], row-aligned with `source`.
    l2: ridge regularisation.
    refine_steps: rounds of iterative refinement after the first solve.
    rcond: see `pinv_psd`.
    mesh: split the tables' rows over this mesh; None uses one device.

  Returns:
    W [source_embed, target_embed] float64 (on the host).
  """
  base.check_tables(source, target)
  source, _ = base.shard_rows(source, mesh)
  target, _ = base.shard_rows(target, mesh)
  gram, cross = base.cross_products(source, target)
  inverse = pinv_psd(np.asarray(gram), l2, rcond)
  w = inverse @ np.asarray(cross, np.float64)
  for _ in range(refine_steps):
    residual = np.asarray(_normal_residual(source, target, base.replicate(w, mesh)), np.float64)
    w = w + inverse @ (residual - l2 * w)
  return w


@base.register('v2v-lin')
def v2v_lin(l2: float = 0.0, refine_steps: int = 1, rcond: float = RCOND,
            mesh: Optional[Mesh] = None) -> base.Recycler:
  """`v2v-lin`: a linear map between the embedding spaces, fit by least squares.

  Args:
    l2: ridge regularisation of W (0: plain least squares).
    refine_steps: rounds of iterative refinement of the normal-equation solve.
    rcond: relative eigenvalue cutoff of the Gram pseudo-inverse.
    mesh: split the tables over this ('data', 'model') mesh while fitting.

  Returns:
    A `Recycler` whose params are {'w': [source_embed, target_embed]}.
  """

  def fit(source, target, rng=None):
    del rng  # Deterministic.
    w = solve_least_squares(source, target, l2=l2, refine_steps=refine_steps, rcond=rcond,
                            mesh=mesh)
    return {'w': jnp.asarray(w, jnp.float32)}

  def apply(params, prompt):
    w = jnp.asarray(params['w'], jnp.float32)
    prompt = base.check_prompt(prompt, w.shape[0])
    return jnp.matmul(prompt, w, precision=base.PRECISION)

  return base.Recycler(fit, apply)


@jax.jit
def _combine(prompt, gram_pinv, source, target):
  # c = prompt G^+ S^T is [prompt_length, vocab], split over devices like S.
  coefficients = jnp.matmul(jnp.matmul(prompt, gram_pinv, precision=base.PRECISION), source.T,
                            precision=base.PRECISION)
  return coefficients, jnp.matmul(coefficients, target, precision=base.PRECISION)


def _lin_comb_tables(params, mesh):
  source, mask = base.shard_rows(params['source'], mesh, params['mask'])
  target, _ = base.shard_rows(params['target'], mesh, params['mask'])
  return source, target, mask


@base.register('lin-comb')
def lin_comb(l2: float = 0.0, rcond: float = RCOND,
             mesh: Optional[Mesh] = None) -> base.Recycler:
  """`lin-comb`: recycle the prompt as a combination of vocabulary rows.

  Args:
    l2: ridge regularisation of the coefficients.
    rcond: relative eigenvalue cutoff of the Gram pseudo-inverse.
    mesh: split the tables over this ('data', 'model') mesh.

  Returns:
    A `Recycler` whose params are {'source': [vocab, source_embed],
    'target': [vocab, target_embed], 'mask': [vocab] bool,
    'gram_pinv': [source_embed, source_embed]} (tables padded for the mesh).
  """

  def fit(source, target, rng=None):
    del rng  # Deterministic.
    base.check_tables(source, target)
    source, mask = base.shard_rows(source, mesh)
    target, _ = base.shard_rows(target, mesh)
    gram_pinv = pinv_psd(np.asarray(base.gram(source)), l2, rcond)
    return {'source': source, 'target': target, 'mask': mask,
            'gram_pinv': jnp.asarray(gram_pinv, jnp.float32)}

  def apply(params, prompt):
    prompt = base.check_prompt(prompt, np.shape(params['gram_pinv'])[0])
    source, target, _ = _lin_comb_tables(params, mesh)
    _, out = _combine(prompt, jnp.asarray(params['gram_pinv']), source, target)
    return out

  return base.Recycler(fit, apply)


def coefficients(params, prompt, mesh: Optional[Mesh] = None) -> jax.Array:
  """The minimum-norm lin-comb coefficients of `prompt` over the fit vocabulary.

  Args:
    params: from `lin_comb(...).fit`.
    prompt: [prompt_length, source_embed].
    mesh: as given to `lin_comb`.

  Returns:
    c [prompt_length, vocab] with c @ source ≈ prompt (padding rows dropped).
  """
  prompt = base.check_prompt(prompt, np.shape(params['gram_pinv'])[0])
  source, target, mask = _lin_comb_tables(params, mesh)
  c, _ = _combine(prompt, jnp.asarray(params['gram_pinv']), source, target)
  return c[:, np.asarray(mask)]

