r"""Throughput of jitted prompt-tuning train steps on random-init T5 1.1 weights.

    python benchmarks/train_throughput.py --size=base --batch=32 --inputs=512 --prompt=100 \
        --targets=8 --dtype=bfloat16                     # the issue's GPU/TPU shape
    python benchmarks/train_throughput.py --size=cpu_tiny --batch=8 --inputs=128 --prompt=20 \
        --targets=8 --dtype=float32 --cpu_devices=2 --accum_steps=2   # the 2-core CPU shape

With --compile_only it compiles the step on abstract weights (nothing is
allocated or run) and prints XLA's memory analysis instead: argument_gb
(frozen model, train state, batch) and temp_gb (activations and scratch),
to see whether a size fits before renting the accelerator for it.

Prints one JSON line: examples_s, tokens_s (encoder tokens incl. prompt + target
tokens), tflops (XLA's own FLOP count of the compiled step / time), mfu against
the stated peak (`--peak_tflops`, default: 989 for H100 bf16 dense, 1979 for
H200/H100 sparse is not used; none on CPU), peak_mem_gb where the backend
reports it, and the compiled step's temp memory from XLA's memory analysis.
"""
import argparse
import json
import time

import jax
import numpy as np

from prompt_recycling import partitioning
from prompt_recycling import prompts
from prompt_recycling import trainer
from prompt_recycling.models import encoder
from prompt_recycling.models import family as families
from prompt_recycling.models import gpt2
from prompt_recycling.models import t5

SIZES = {  # emb, heads, layers, head_dim, mlp
    'cpu_tiny': (256, 4, 4, 64, 512),
    'small': (512, 6, 8, 64, 1024),
    'base': (768, 12, 12, 64, 2048),
    'large': (1024, 16, 24, 64, 2816),
    'xl': (2048, 32, 24, 64, 5120),
    'xxl': (4096, 64, 24, 64, 10240),
}
# The other families (lpt_vs_pt.py, peft_baseline.py): emb, heads, layers, head_dim, mlp. base and
# large are the public checkpoints' sizes (roberta-base / gpt2, roberta-large / gpt2-large: late
# prompt tuning's paper setting); cpu_tiny has T5 cpu_tiny's width and its 4 + 4 layers in one stack.
FAMILY_SIZES = {
    'roberta': {'cpu_tiny': (256, 4, 8, 64, 1024), 'base': (768, 12, 12, 64, 3072),
                'large': (1024, 16, 24, 64, 4096)},
    'gpt2': {'cpu_tiny': (256, 4, 8, 64, 1024), 'base': (768, 12, 12, 64, 3072),
             'large': (1280, 20, 36, 64, 5120)},
}
FAMILY_VOCAB = {'roberta': 50265, 'gpt2': 50257}  # Their real vocabularies (frozen, but the
# output layer over them is part of every step).
ROBERTA_MASK_ID = 50264
# Dense bf16 peaks per chip, TFLOP/s (vendor datasheets).
PEAKS = {'H100': 989.0, 'H200': 989.0, 'A100': 312.0, 'TPU v4': 275.0, 'TPU v5p': 459.0}


def config_for(size: str, dtype: str, remat: str) -> t5.T5Config:
  emb, heads, layers, head_dim, mlp = SIZES[size]
  return t5.T5Config(emb_dim=emb, num_heads=heads, num_encoder_layers=layers,
                     num_decoder_layers=layers, head_dim=head_dim, mlp_dim=mlp, dtype=dtype,
                     remat_policy=remat)


def sizes_of(family: str, size: str):
  """(emb, heads, layers, head_dim, mlp) of `family` ('t5', 'roberta', 'gpt2') at `size`."""
  table = SIZES if family == 't5' else FAMILY_SIZES[family]
  if size not in table:
    raise SystemExit(f'No {family} size {size!r}; choose from {sorted(table)}.')
  return table[size]


def family_for(family: str, size: str, dtype: str) -> families.Family:
  """A `models.family` family of random-init sizes (no dropout: only the method differs)."""
  if family == 't5':
    return families.EncoderDecoder(config_for(size, dtype, 'none'))
  emb, heads, layers, head_dim, mlp = sizes_of(family, size)
  if family == 'roberta':
    return families.MaskedLM(encoder.EncoderConfig(
        vocab_size=FAMILY_VOCAB[family], emb_dim=emb, num_heads=heads, head_dim=head_dim,
        mlp_dim=mlp, num_layers=layers, max_positions=1026, type_vocab_size=1, pad_id=1,
        positions_from_padding=True, layer_norm_epsilon=1e-5, dtype=dtype),
        mask_id=ROBERTA_MASK_ID, eos_id=2)
  return families.CausalLM(gpt2.GPT2Config(
      vocab_size=FAMILY_VOCAB[family], emb_dim=emb, num_heads=heads, head_dim=head_dim,
      mlp_dim=mlp, num_layers=layers, dtype=dtype))


def family_examples(family: str, batch: int, inputs: int, targets: int, seed: int = 0):
  """Random examples of the shapes every method and library is timed on.

  t5: `inputs` encoder and `targets` decoder tokens. roberta: <s> + random
  tokens + <mask> + </s>, `inputs` tokens in all, one target at the mask (as
  LPT's classification runs). gpt2: `inputs` then `targets` tokens in one
  sequence, the loss on the targets.
  """
  rng = np.random.default_rng(seed)
  vocab = 32000 if family == 't5' else FAMILY_VOCAB[family] - 10
  out = []
  for _ in range(batch):
    ids = rng.integers(3, vocab, inputs + targets).tolist()
    if family == 'roberta':
      out.append({'inputs': [0] + ids[:inputs - 3] + [ROBERTA_MASK_ID, 2], 'targets': ids[-1:]})
    else:
      out.append({'inputs': ids[:inputs], 'targets': ids[inputs:]})
  return out


def random_batch(batch: int, inputs: int, targets: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  enc = rng.integers(2, 32000, (batch, inputs), dtype=np.int32)
  tgt = rng.integers(2, 32000, (batch, targets), dtype=np.int32)
  dec = np.concatenate([np.zeros((batch, 1), np.int32), tgt[:, :-1]], axis=1)
  return {'encoder_input_tokens': enc, 'decoder_input_tokens': dec,
          'decoder_target_tokens': tgt, 'decoder_loss_weights': np.ones_like(tgt)}


def timed_rounds(steps, state, frozen, batch, rng, rounds: int, steps_per_round: int):
  """Runs `rounds` rounds of train steps; returns the last state, metrics and s/step per round."""
  times, metrics = [], None
  for _ in range(rounds):
    start = time.perf_counter()
    for _ in range(steps_per_round):
      state, metrics = steps.train(state, frozen, batch, rng)
    jax.block_until_ready(metrics)
    times.append((time.perf_counter() - start) / steps_per_round)
  return state, metrics, times


def peak_for(device) -> float:
  kind = getattr(device, 'device_kind', '')
  return next((v for k, v in PEAKS.items() if k in kind), float('nan'))


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--size', default='cpu_tiny', choices=sorted(SIZES))
  p.add_argument('--batch', type=int, default=8)
  p.add_argument('--inputs', type=int, default=128)
  p.add_argument('--targets', type=int, default=8)
  p.add_argument('--prompt', type=int, default=20)
  p.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16'])
  p.add_argument('--remat', default='none', choices=['none', 'minimal', 'full'])
  p.add_argument('--steps', type=int, default=10, help='Steps per timed round.')
  p.add_argument('--rounds', type=int, default=5, help='Timed rounds; the median is reported.')
  p.add_argument('--accum_steps', type=int, default=1,
                 help='Microbatches per step (gradient accumulation; the same update).')
  p.add_argument('--num_partitions', type=int, default=1)
  p.add_argument('--cpu_devices', type=int, default=None,
                 help='Split the CPU into this many XLA devices (data parallel over the mesh), '
                      "e.g. one per core; sets jax_num_cpu_devices before the backend starts.")
  p.add_argument('--peak_tflops', type=float, default=None,
                 help='Peak per device used for MFU (default: by device kind).')
  p.add_argument('--compile_only', action='store_true',
                 help="Compile the step on abstract weights and print XLA's memory analysis "
                      '(will it fit?) without allocating or running anything.')
  args = p.parse_args()
  if args.cpu_devices:
    jax.config.update('jax_num_cpu_devices', args.cpu_devices)

  cfg = config_for(args.size, args.dtype, args.remat)
  model = t5.T5(cfg)
  mesh = partitioning.make_mesh(args.num_partitions)
  method = prompts.prompt_tuning(args.prompt, prompts.sampled_vocab())
  steps = trainer.Steps(model, method, trainer.adafactor(), mesh, accum_steps=args.accum_steps,
                        enable_dropout=False)
  rng = jax.random.key(2)
  with partitioning.axis_rules(mesh):
    if args.compile_only:  # Shapes and shardings only: nothing is allocated.
      frozen = jax.eval_shape(
          lambda key: trainer.random_frozen(model, key, steps.frozen_shardings), jax.random.key(0))
      state = jax.eval_shape(steps._init, jax.random.key(1), frozen)  # pylint: disable=protected-access
      state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                           state, steps.state_shardings)
      batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                           random_batch(args.batch, args.inputs, args.targets))
    else:
      frozen = trainer.random_frozen(model, jax.random.key(0), steps.frozen_shardings)
  if not args.compile_only:
    state = steps.init(jax.random.key(1), frozen)
    batch = partitioning.shard_batch(random_batch(args.batch, args.inputs, args.targets), mesh)

  with partitioning.axis_rules(mesh):
    compiled = steps._train.lower(state, frozen, batch, rng).compile()  # pylint: disable=protected-access
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  flops = float(cost.get('flops', float('nan'))) if cost else float('nan')
  mem = compiled.memory_analysis()
  temp_gb = getattr(mem, 'temp_size_in_bytes', 0) / 1e9 if mem else None
  if args.compile_only:
    gb = lambda name: getattr(mem, name, 0) / 1e9 if mem else None
    print(json.dumps({
        'benchmark': 'train_memory', 'method': 'prompt_tuning', 'size': args.size,
        'backend': jax.default_backend(), 'devices': len(jax.devices()), 'batch': args.batch,
        'inputs': args.inputs, 'prompt': args.prompt, 'targets': args.targets,
        'dtype': args.dtype, 'remat': args.remat, 'accum_steps': args.accum_steps,
        'xla_flops_per_step': flops, 'argument_gb': gb('argument_size_in_bytes'),
        'output_gb': gb('output_size_in_bytes'), 'alias_gb': gb('alias_size_in_bytes'),
        'temp_gb': temp_gb}))
    return

  for _ in range(2):  # Warm up (the first call also transfers).
    state, metrics = steps.train(state, frozen, batch, rng)
  jax.block_until_ready(metrics)
  state, metrics, rounds = timed_rounds(steps, state, frozen, batch, rng, args.rounds, args.steps)
  seconds = float(np.median(rounds))  # Robust to noisy hosts.

  device = jax.devices()[0]
  stats = device.memory_stats() if hasattr(device, 'memory_stats') else None
  peak = args.peak_tflops or peak_for(device)
  tflops = flops / seconds / 1e12
  print(json.dumps({
      'benchmark': 'train_throughput', 'method': 'prompt_tuning', 'size': args.size,
      'backend': jax.default_backend(), 'device': getattr(device, 'device_kind', str(device)),
      'devices': len(jax.devices()), 'batch': args.batch, 'inputs': args.inputs,
      'prompt': args.prompt, 'targets': args.targets, 'dtype': args.dtype, 'remat': args.remat,
      'accum_steps': args.accum_steps,
      'step_s': seconds, 'step_s_rounds': rounds, 'examples_s': args.batch / seconds,
      'tokens_s': args.batch * (args.inputs + args.prompt + args.targets) / seconds,
      'xla_flops_per_step': flops, 'tflops': tflops,
      'peak_tflops_per_device': None if np.isnan(peak) else peak,
      'mfu': None if np.isnan(peak) else tflops / (peak * len(jax.devices())),
      'peak_mem_gb': stats['peak_bytes_in_use'] / 1e9 if stats and 'peak_bytes_in_use' in stats else None,
      'compiled_temp_gb': temp_gb,
      'loss': float(metrics['loss'])}))


if __name__ == '__main__':
  main()
