"""Device mesh, the one table of logical-axis rules, and logical -> NamedSharding.

Parameters and activations are annotated with logical axis names
(`models/t5.py`, `prompts.py`); `LOGICAL_AXIS_RULES` maps them onto the mesh's
`data` and `model` axes as t5x's `standard_logical_axis_rules` does for 1-D
data parallelism plus 1-D model parallelism. This module knows no module names.
"""
import contextlib
import logging
from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

Rules = Sequence[Tuple[str, Optional[str]]]

LOGICAL_AXIS_RULES: Rules = (
    ('batch', 'data'),
    ('vocab', 'model'),
    ('embed', None),
    ('mlp', 'model'),
    ('heads', 'model'),
    ('kv', None),
    ('joined_kv', 'model'),
    ('relpos_buckets', None),
    ('length', None),
    # Prompts are small: every device holds the whole prompt.
    ('prompt', None),
    ('prompt_embed', None),
    ('prompt_mlp', None),  # The late prompt generator's bottleneck (lpt.py).
)


def make_mesh(num_partitions: int = 1, devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A [data, model] mesh over all (or the given) devices.

  Args:
    num_partitions: size of the `model` axis (model parallelism); the rest of
      the devices form the `data` axis.
    devices: defaults to `jax.devices()`, i.e. every device of every host.

  Returns:
    A `Mesh` with axis names ('data', 'model').
  """
  devices = list(jax.devices() if devices is None else devices)
  if len(devices) % num_partitions:
    raise ValueError(f'num_partitions={num_partitions} does not divide the {len(devices)} devices.')
  grid = np.asarray(devices).reshape(len(devices) // num_partitions, num_partitions)
  return Mesh(grid, ('data', 'model'))


def logical_to_mesh_sharding(logical_specs: Any, mesh: Mesh, rules: Rules = LOGICAL_AXIS_RULES) -> Any:
  """Maps a tree of logical `PartitionSpec`s (or None = replicated) to `NamedSharding`s."""
  def to_sharding(spec):
    if spec is None:
      return NamedSharding(mesh, P())
    return NamedSharding(mesh, nn.logical_to_mesh_axes(spec, rules))
  return jax.tree.map(to_sharding, logical_specs, is_leaf=lambda x: x is None or isinstance(x, P))


def params_shardings(init_fn, *args, mesh: Mesh, rules: Rules = LOGICAL_AXIS_RULES):
  """Shapes and shardings of `init_fn(*args)`'s boxed parameters, without computing them.

  A dimension its mesh axes do not divide (GPT-2's vocabulary of 50,257 rows
  over a `model` axis of 2) is replicated instead (`divisible`), with a log
  line naming the parameter: arrays placed on the mesh must split evenly.

  Returns:
    (abstract params with boxes removed, tree of `NamedSharding`).
  """
  abstract = jax.eval_shape(init_fn, *args)
  specs = nn.get_partition_spec(abstract)
  abstract = nn.unbox(abstract)
  return abstract, divisible(abstract, logical_to_mesh_sharding(specs, mesh, rules))


def divisible(abstract: Any, shardings: Any) -> Any:
  """`shardings` with every dimension its mesh axes do not divide evenly replicated."""
  def fit(path, leaf, sharding):
    spec = list(sharding.spec) + [None] * (len(leaf.shape) - len(sharding.spec))
    for dim, axes in enumerate(spec):
      if axes is None:
        continue
      parts = int(np.prod([sharding.mesh.shape[a] for a in
                           (axes if isinstance(axes, tuple) else (axes,))]))
      if leaf.shape[dim] % parts:
        logging.info('%s: dimension %d of size %d does not split over %s (%d devices); it is '
                     'replicated.', jax.tree_util.keystr(path), dim, leaf.shape[dim], axes, parts)
        spec[dim] = None
    return NamedSharding(sharding.mesh, P(*spec))
  return jax.tree_util.tree_map_with_path(fit, abstract, shardings)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Examples split over `data`; every other dimension whole."""
  return NamedSharding(mesh, P('data'))


def shard_batch(local_batch: dict, mesh: Mesh) -> dict:
  """Turns this host's slice of a global batch into global arrays on the mesh.

  On one host this is a plain `device_put`; with several hosts each passes its
  own rows (`data.py` reads a per-host shard) and the global batch is their
  concatenation in process order.
  """
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}


@contextlib.contextmanager
def axis_rules(mesh: Mesh, rules: Rules = LOGICAL_AXIS_RULES):
  """Context under which `nn.with_logical_constraint` shards activations on `mesh`."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield
