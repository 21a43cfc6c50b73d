r"""LAMA P@1 throughput: facts scored per second, every candidate in one forward pass per batch.

    python benchmarks/lama_p1.py                              # the real tiny T5 1.1 checkpoint
    python benchmarks/lama_p1.py --relations=P19,P20 --batch=128 --soft_prompt=5

Reads ../shared/data (the tiny T5X checkpoint, LAMA T-REx test facts, OptiPrompt's common
vocabulary). Prints one JSON line: facts, candidates, examples_per_s (median of --rounds timed
passes over all facts, after one warm-up pass that compiles), the P@1 it measured, the backend.
"""
import argparse
import json
import pathlib
import statistics
import time

import jax

from prompt_recycling import checkpoints
from prompt_recycling import lama_probe
from prompt_recycling import vocabulary
from prompt_recycling.models import t5

SHARED = pathlib.Path(__file__).resolve().parents[2] / 'shared' / 'data'


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--checkpoint', default=str(SHARED / 't5' / 'test_t5_1_1_tiny' / 'checkpoint_3'))
  p.add_argument('--lama_dir', default=str(SHARED / 'lama'))
  p.add_argument('--relations', default='P19,P20,P101,P17')
  p.add_argument('--batch', type=int, default=64)
  p.add_argument('--length', type=int, default=48)
  p.add_argument('--soft_prompt', type=int, default=0, help='soft prompt rows (0: manual template)')
  p.add_argument('--rounds', type=int, default=3)
  args = p.parse_args()

  params, config = checkpoints.load_params(args.checkpoint)
  model = t5.T5(config)
  tokenizer = vocabulary.get_vocabulary(str(SHARED / 't5' / 'sentencepiece.model'))
  facts, templates, words = lama_probe.load_lama(args.lama_dir,
                                                 relations=args.relations.split(','))
  kept, ids = lama_probe.candidates(words, tokenizer)
  kwargs = {'templates': templates}
  if args.soft_prompt:
    prompt = params['token_embedder']['embedding'][3:3 + args.soft_prompt]
    kwargs = {'prompts': {r: prompt for r in facts}}
  run = lambda: lama_probe.precision_at_1(model, params, tokenizer, facts, kept, ids,
                                          batch_size=args.batch, length=args.length, **kwargs)
  result = run()  # Warm-up: compiles.
  times = []
  for _ in range(args.rounds):
    start = time.perf_counter()
    result = run()
    times.append(time.perf_counter() - start)
  n = sum(result['num_facts'].values())
  print(json.dumps({'facts': n, 'candidates': len(kept), 'batch': args.batch,
                    'soft_prompt': args.soft_prompt, 'emb_dim': config.emb_dim,
                    'examples_per_s': round(n / statistics.median(times), 1),
                    'p@1': round(result['p@1'], 2), 'backend': jax.default_backend(),
                    'devices': jax.device_count()}))


if __name__ == '__main__':
  main()
