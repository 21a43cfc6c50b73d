r"""Rank classification of SST-2 validation on a shipped demo model: one encoding per input vs a row per candidate.

    python benchmarks/rank_eval.py [--model=B] [--prompt_length=10] [--batch_size=32] [--repeats=3]

Evaluates a random prompt (the cost does not depend on its values) on all 872
validation sentences, as the demo does, twice per repeat: with T5 encoding each
input once and decoding both label words from it (`Steps.score_candidates`, the
default) and with every (sentence, label word) pair as its own row (the path
per-example candidates such as ReCoRD's take). Reports the best wall and CPU
seconds of each after a warm-up pass (compilation excluded) and checks that
the two paths give the same accuracy.

Prints one JSON line.
"""
import argparse
import json
import os
import time

import numpy as np


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--model', default='B', choices=['A', 'B', 'C'])
  parser.add_argument('--prompt_length', type=int, default=10)
  parser.add_argument('--batch_size', type=int, default=32)
  parser.add_argument('--repeats', type=int, default=3)
  args = parser.parse_args()

  from prompt_recycling import data, demo, experiment, partitioning  # pylint: disable=g-import-not-at-top
  data.configure_tasks(str(demo.ASSETS / 't5' / 'sentencepiece.model'), str(demo.ASSETS / 'data'))
  spec = {'name': args.model, **demo.models([args.model])[args.model]}
  target = experiment.TargetModel(spec, 'glue_sst2_v2', 'validation', 'rank',
                                  {'inputs': 64, 'targets': 2}, args.batch_size, None,
                                  partitioning.make_mesh(1))
  prompt = np.random.default_rng(0).normal(
      size=(args.prompt_length, target.config.emb_dim)).astype(np.float32)
  target.evaluate(prompt)  # Builds the prompt's steps.
  steps = target._steps[args.prompt_length]  # pylint: disable=protected-access
  together = steps._score_candidates  # pylint: disable=protected-access
  results = {}
  for name, fn in (('one_encoding', together), ('row_per_candidate', None)):
    steps._score_candidates = fn  # pylint: disable=protected-access
    accuracy = target.evaluate(prompt)['accuracy']  # Warm-up: compiles every length bucket.
    walls, cpus = [], []
    for _ in range(args.repeats):
      wall, cpu = time.perf_counter(), time.process_time()
      target.evaluate(prompt)
      walls.append(time.perf_counter() - wall)
      cpus.append(time.process_time() - cpu)
    results[name] = {'wall_s': round(min(walls), 3), 'cpu_s': round(min(cpus), 3),
                     'accuracy': accuracy}
  assert results['one_encoding']['accuracy'] == results['row_per_candidate']['accuracy'], results
  print(json.dumps({'model': args.model, 'examples': 872, 'batch_size': args.batch_size,
                    'prompt_length': args.prompt_length, **results,
                    'speedup_wall': round(results['row_per_candidate']['wall_s']
                                          / results['one_encoding']['wall_s'], 2),
                    'load_1min': round(os.getloadavg()[0], 2),
                    'xla_flags': os.environ.get('XLA_FLAGS', '')}))


if __name__ == '__main__':
  main()
