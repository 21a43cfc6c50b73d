r"""Time fit + apply of every recycler on random full-vocabulary tables.

    python benchmarks/recycle_throughput.py                      # 32128x768 -> 32128x1024
    python benchmarks/recycle_throughput.py --recyclers=v2v-lin,lin-comb --repeats=3
    python benchmarks/recycle_throughput.py --mesh               # vocab split over all devices

Prints one JSON line per recycler: fit_s and apply_s (seconds, outputs ready),
the backend and device count. With --repeats=1 (default) the times include
XLA compilation, as a one-off CLI run sees them; with more repeats they are the
fastest of the runs after the first. The search / training recyclers run
--relative_steps and --nn_steps steps (their defaults are 1000 and 2000: scale
their times accordingly).
"""
import argparse
import json
import time

import jax
import numpy as np

from prompt_recycling import recycling
from prompt_recycling import partitioning


def _ready(tree):
  return jax.block_until_ready(tree)


def _timed(fn, repeats):
  times, out = [], None
  for _ in range(repeats):
    start = time.perf_counter()
    out = _ready(fn())
    times.append(time.perf_counter() - start)
  return out, (times[0] if repeats == 1 else min(times[1:]))


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--vocab', type=int, default=32128)
  p.add_argument('--source_embed', type=int, default=768)
  p.add_argument('--target_embed', type=int, default=1024)
  p.add_argument('--prompt', type=int, default=100, help='prompt length')
  p.add_argument('--recyclers', default=','.join(recycling.recycler_names()))
  p.add_argument('--nn_steps', type=int, default=100, help='v2v-nn / neural-projector steps')
  p.add_argument('--nn_batch', type=int, default=128)
  p.add_argument('--relative_steps', type=int, default=100)
  p.add_argument('--num_anchors', type=int, default=8192)
  p.add_argument('--repeats', type=int, default=1)
  p.add_argument('--mesh', action='store_true', help='split the vocab over all devices')
  args = p.parse_args()

  rng = np.random.default_rng(0)
  source = rng.normal(size=(args.vocab, args.source_embed)).astype(np.float32)
  target = rng.normal(size=(args.vocab, args.target_embed)).astype(np.float32)
  prompt = rng.normal(size=(args.prompt, args.source_embed)).astype(np.float32)
  mesh = partitioning.make_mesh() if args.mesh else None
  extra = {
      'v2v-nn': {'steps': args.nn_steps, 'batch_size': args.nn_batch},
      'neural-projector': {'steps': args.nn_steps, 'batch_size': args.nn_batch},
      'relative': {'steps': args.relative_steps, 'num_anchors': args.num_anchors},
  }
  for name in args.recyclers.split(','):
    kwargs = dict(extra.get(name, {}), mesh=mesh)
    recycler = recycling.get_recycler(name, **kwargs)
    params, fit_s = _timed(lambda: recycler.fit(source, target, jax.random.PRNGKey(0)),
                           args.repeats)
    out, apply_s = _timed(lambda: recycler.apply(params, prompt), args.repeats)
    assert out.shape == (args.prompt, args.target_embed) and np.isfinite(np.asarray(out)).all()
    record = {'recycler': name, 'fit_s': round(fit_s, 4), 'apply_s': round(apply_s, 4),
              'backend': jax.default_backend(),
              'devices': mesh.devices.size if mesh is not None else 1,
              'vocab': args.vocab, 'source_embed': args.source_embed,
              'target_embed': args.target_embed, 'prompt': args.prompt}
    if 'steps' in kwargs:
      record['steps'] = kwargs['steps']
    print(json.dumps(record), flush=True)


if __name__ == '__main__':
  main()
