r"""The reference point for train_throughput.py: HF PEFT prompt tuning on the same shapes.

    python benchmarks/peft_baseline.py --size=cpu_tiny --batch=8 --inputs=128 --prompt=20 --targets=8
    python benchmarks/peft_baseline.py --size=base --batch=32 --inputs=512 --prompt=100 \
        --targets=8 --compile   # GPU, torch.compile

Random-init T5 1.1 (transformers) wrapped by peft's PromptTuningConfig; the
optimizer is transformers' Adafactor with the paper's settings. Prints one JSON
line in train_throughput.py's form. Needs torch, transformers and peft.
"""
import argparse
import json
import time

import torch
import transformers
import peft

from train_throughput import SIZES  # pylint: disable=g-import-not-at-top


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--size', default='cpu_tiny', choices=sorted(SIZES))
  p.add_argument('--batch', type=int, default=8)
  p.add_argument('--inputs', type=int, default=128)
  p.add_argument('--targets', type=int, default=8)
  p.add_argument('--prompt', type=int, default=20)
  p.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16'])
  p.add_argument('--steps', type=int, default=10, help='Steps per timed round.')
  p.add_argument('--rounds', type=int, default=5, help='Timed rounds; the median is reported.')
  p.add_argument('--compile', action='store_true')
  p.add_argument('--accum_steps', type=int, default=1,
                 help='Microbatches per step (gradient accumulation; the same update).')
  args = p.parse_args()

  emb, heads, layers, head_dim, mlp = SIZES[args.size]
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  dtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16}[args.dtype]
  cfg = transformers.T5Config(vocab_size=32128, d_model=emb, d_kv=head_dim, d_ff=mlp,
                              num_layers=layers, num_heads=heads, feed_forward_proj='gated-gelu',
                              tie_word_embeddings=False, dropout_rate=0.0,
                              decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
  model = transformers.T5ForConditionalGeneration(cfg).to(device=device, dtype=dtype)
  model = peft.get_peft_model(model, peft.PromptTuningConfig(
      task_type=peft.TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=args.prompt))
  opt = transformers.optimization.Adafactor(
      [q for q in model.parameters() if q.requires_grad], lr=0.3, relative_step=False,
      scale_parameter=False, warmup_init=False, decay_rate=-0.8, clip_threshold=1.0,
      weight_decay=1e-5)
  gen = torch.Generator().manual_seed(0)
  ids = torch.randint(2, 32000, (args.batch, args.inputs), generator=gen).to(device)
  labels = torch.randint(2, 32000, (args.batch, args.targets), generator=gen).to(device)
  mask = torch.ones_like(ids)

  def step():
    loss = 0.0
    for chunk in zip(*(torch.chunk(t, args.accum_steps) for t in (ids, mask, labels))):
      part = model(input_ids=chunk[0], attention_mask=chunk[1], labels=chunk[2]).loss
      (part / args.accum_steps).backward()
      loss += part.detach() / args.accum_steps
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss

  if args.compile:
    step = torch.compile(step)
  for _ in range(2):
    loss = step()
  if device == 'cuda':
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
  rounds = []  # As train_throughput.py: the median round is reported.
  for _ in range(args.rounds):
    start = time.perf_counter()
    for _ in range(args.steps):
      loss = step()
    if device == 'cuda':
      torch.cuda.synchronize()
    rounds.append((time.perf_counter() - start) / args.steps)
  seconds = float(sorted(rounds)[len(rounds) // 2])
  print(json.dumps({
      'benchmark': 'train_throughput', 'method': 'peft_prompt_tuning' + ('_compiled' if args.compile else ''),
      'size': args.size, 'backend': device, 'torch_threads': torch.get_num_threads(),
      'batch': args.batch, 'inputs': args.inputs, 'prompt': args.prompt, 'targets': args.targets,
      'dtype': args.dtype, 'accum_steps': args.accum_steps, 'step_s': seconds, 'step_s_rounds': rounds, 'examples_s': args.batch / seconds,
      'tokens_s': args.batch * (args.inputs + args.prompt + args.targets) / seconds,
      'peak_mem_gb': torch.cuda.max_memory_allocated() / 1e9 if device == 'cuda' else None,
      'loss': float(loss)}))


if __name__ == '__main__':
  main()
