"""Diagnostics of recyclers: held-out token-pair fit and nearest target tokens.

* `held_out_fit`: split the (source row, target row) token pairs into fit and
  held-out sets by a seeded permutation, fit the recycler on the first, apply it
  to the held-out source rows (as one "prompt") and compare with the true target
  rows: mean cosine and MSE, next to the cosine of always predicting the mean
  target row (a recycler should beat it).
* `nearest_target_tokens`: for a recycled prompt, the k target tokens nearest
  (cosine) each prompt row, with their pieces if given: what the prompt "reads
  as" in the target model.

Pure functions returning dicts of numbers and arrays; `format_report` renders
them as Markdown and nothing here prints.
"""
from typing import Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from prompt_recycling.recycling import base


def split_pairs(num_rows: int, held_out_fraction: float = 0.1,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """A seeded random split of `num_rows` token pairs.

  Args:
    num_rows: rows of the aligned tables.
    held_out_fraction: share held out, in (0, 1).
    seed: numpy seed of the permutation.

  Returns:
    (fit_rows, held_out_rows): sorted int64 indices, disjoint, covering all rows.
  """
  if not 0 < held_out_fraction < 1:
    raise ValueError(f'held_out_fraction must be in (0, 1); found {held_out_fraction}.')
  held = max(1, int(round(num_rows * held_out_fraction)))
  if held >= num_rows:
    raise ValueError(f'{num_rows} rows leave nothing to fit with {held} held out.')
  order = np.random.default_rng(seed).permutation(num_rows)
  return np.sort(order[held:]), np.sort(order[:held])


def row_cosines(a, b) -> np.ndarray:
  """Cosine similarity of each row of `a` [n, embed] with the same row of `b`: [n]."""
  a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
  return np.asarray(jnp.sum(base.normalize_rows(a) * base.normalize_rows(b), axis=-1))


def held_out_fit(recycler: base.Recycler, source, target, rng: jax.Array,
                 held_out_fraction: float = 0.1, seed: int = 0,
                 max_held_out: Optional[int] = None) -> dict:
  """How well a recycler maps token embeddings it was not fit on.

  Args:
    recycler: any `Recycler`.
    source: [vocab, source_embed] aligned with `target`.
    target: [vocab, target_embed].
    rng: passed to `recycler.fit`.
    held_out_fraction: share of the pairs held out.
    seed: seed of the split.
    max_held_out: apply to at most this many held-out rows (the first of the
      split), to bound the cost of search-based recyclers.

  Returns:
    {'cosine': mean cosine between recycled and true held-out target rows,
     'mse': their mean squared error per entry,
     'mean_baseline_cosine': mean cosine of the fit rows' mean target row with
       the true held-out rows,
     'num_fit', 'num_held_out': pair counts,
     'cosines': [num_held_out] per-row cosines}.
  """
  base.check_tables(source, target)
  source, target = np.asarray(source, np.float32), np.asarray(target, np.float32)
  fit_rows, held_rows = split_pairs(source.shape[0], held_out_fraction, seed)
  if max_held_out is not None:
    held_rows = held_rows[:max_held_out]
  params = recycler.fit(source[fit_rows], target[fit_rows], rng)
  predicted = np.asarray(recycler.apply(params, source[held_rows]))
  truth = target[held_rows]
  cosines = row_cosines(predicted, truth)
  mean_row = target[fit_rows].mean(axis=0, keepdims=True)
  return {
      'cosine': float(cosines.mean()),
      'mse': float(np.mean(np.square(predicted - truth))),
      'mean_baseline_cosine': float(row_cosines(np.broadcast_to(mean_row, truth.shape),
                                                truth).mean()),
      'num_fit': int(fit_rows.size),
      'num_held_out': int(held_rows.size),
      'cosines': cosines,
  }


def nearest_target_tokens(prompt, target, k: int = 5, token_ids=None,
                          pieces: Optional[Sequence[str]] = None,
                          mesh: Optional[Mesh] = None) -> dict:
  """The k target tokens most cosine-similar to each row of a recycled prompt.

  Args:
    prompt: [prompt_length, target_embed], e.g. a recycler's output.
    target: [vocab, target_embed], the target embedding table (or selected rows
      of it, with `token_ids`).
    k: neighbours per row.
    token_ids: [vocab] token id of each row of `target`; default the row index.
    pieces: piece string of each token id (indexed by token id), optional.
    mesh: split `target` over this mesh's devices.

  Returns:
    {'ids': [prompt_length, k] int64 token ids, 'cosine': [prompt_length, k]
     float32, best first, and 'pieces': [prompt_length][k] strings if `pieces`}.
  """
  base.check_table(target, 'target embedding table')
  table, mask = base.shard_rows(target, mesh)
  prompt = base.check_prompt(prompt, table.shape[1])
  rows, cosines = base.nearest_rows(prompt, table, mask, k=k, metric='cosine')
  ids = rows.astype(np.int64) if token_ids is None else np.asarray(token_ids)[rows]
  result = {'ids': ids, 'cosine': cosines}
  if pieces is not None:
    result['pieces'] = [[pieces[i] for i in row] for row in ids]
  return result


def format_report(fits: Mapping[str, dict], neighbours: Optional[dict] = None,
                  max_rows: int = 10) -> str:
  """Markdown: one table row per recycler's `held_out_fit`, then neighbours.

  Args:
    fits: {recycler name: `held_out_fit` result}.
    neighbours: a `nearest_target_tokens` result, optional.
    max_rows: prompt rows of `neighbours` shown.

  Returns:
    A Markdown string.
  """
  lines = ['| recycler | held-out cosine | mse | mean-row cosine | fit / held out |',
           '| --- | ---: | ---: | ---: | ---: |']
  for name, fit in fits.items():
    lines.append(f"| {name} | {fit['cosine']:.4f} | {fit['mse']:.4g} | "
                 f"{fit['mean_baseline_cosine']:.4f} | {fit['num_fit']} / {fit['num_held_out']} |")
  if neighbours is not None:
    lines += ['', '| prompt row | nearest target tokens (cosine) |', '| ---: | --- |']
    labels = neighbours.get('pieces', neighbours['ids'].tolist())
    for i, (row, cos) in enumerate(zip(labels[:max_rows], neighbours['cosine'][:max_rows])):
      cells = ', '.join(f'{label!r} ({c:.3f})' if isinstance(label, str) else f'{label} ({c:.3f})'
                        for label, c in zip(row, cos))
      lines.append(f'| {i} | {cells} |')
  return '\n'.join(lines)
