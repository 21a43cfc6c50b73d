r"""The reference point for our train steps: HF PEFT prompt tuning on the same shapes.

    python benchmarks/peft_baseline.py --size=cpu_tiny --batch=8 --inputs=128 --prompt=20 --targets=8
    python benchmarks/peft_baseline.py --family=roberta --size=cpu_tiny --batch=8 --inputs=128 --prompt=5
    python benchmarks/peft_baseline.py --family=gpt2 --size=cpu_tiny --batch=8 --inputs=128 \
        --prompt=5 --targets=8
    python benchmarks/peft_baseline.py --size=base --batch=32 --inputs=512 --prompt=100 \
        --targets=8 --compile   # GPU, torch.compile

--family t5 (default): random-init T5 1.1 (transformers) with transformers'
Adafactor at the paper's settings; compare with train_throughput.py. --family
roberta / gpt2: random-init `RobertaForMaskedLM` / `GPT2LMHeadModel` of
train_throughput.FAMILY_SIZES, on the examples lpt_vs_pt.py times
(`family_examples`: RoBERTa one target at <mask>, GPT-2 --targets continuation
tokens), with torch's AdamW (the LPT code's optimizer); compare with
`lpt_vs_pt.py --family=... --methods=prompt_tuning`. Each model is wrapped by
peft's PromptTuningConfig (RoBERTa as TOKEN_CLS: the prompt goes in front of
<s> and the labels get -100 there; GPT-2 as CAUSAL_LM). No dropout. Prints one
JSON line in train_throughput.py's form. Needs torch, transformers and peft
(`pip install -c constraints-cpu.txt -e '.[bench]'`).
"""
import argparse
import json
import time

import torch
import transformers
import peft

from train_throughput import FAMILY_SIZES, FAMILY_VOCAB, SIZES, family_examples, sizes_of  # pylint: disable=g-import-not-at-top,g-multiple-import


def t5_setup(args, device, dtype):
  """(PEFT T5, optimizer, (input_ids, attention_mask, labels)) as the T5 reference always was."""
  emb, heads, layers, head_dim, mlp = SIZES[args.size]
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
  return model, opt, (ids, torch.ones_like(ids), labels)


def family_setup(args, device, dtype):
  """(PEFT RoBERTa MLM or GPT-2, AdamW, tensors) on lpt_vs_pt.py's examples."""
  emb, heads, layers, head_dim, mlp = sizes_of(args.family, args.size)
  del head_dim  # emb / heads in transformers' configs.
  vocab = FAMILY_VOCAB[args.family]
  examples = family_examples(args.family, args.batch, args.inputs, args.targets)
  if args.family == 'roberta':
    model = transformers.RobertaForMaskedLM(transformers.RobertaConfig(
        vocab_size=vocab, hidden_size=emb, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=mlp, max_position_embeddings=1026, type_vocab_size=1, pad_token_id=1,
        layer_norm_eps=1e-5, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    task = peft.TaskType.TOKEN_CLS
    ids = torch.tensor([ex['inputs'] for ex in examples])
    # -100 everywhere but the <mask>, and over the prompt PEFT puts in front.
    labels = torch.full((args.batch, args.prompt + ids.shape[1]), -100)
    labels[:, args.prompt + ids.shape[1] - 2] = torch.tensor([ex['targets'][0] for ex in examples])
  else:
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=vocab, n_embd=emb, n_layer=layers, n_head=heads, n_inner=mlp,
        n_positions=1024, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    task = peft.TaskType.CAUSAL_LM
    # inputs ++ targets, the loss on the targets (GPT2LMHeadModel shifts the labels itself, so
    # it runs one token more than models/family.CausalLM's inputs + targets - 1).
    seqs = [ex['inputs'] + ex['targets'] for ex in examples]
    ids = torch.tensor(seqs)
    labels = torch.tensor([[-100] * args.inputs + seq[args.inputs:] for seq in seqs])
  model = peft.get_peft_model(model.to(device=device, dtype=dtype), peft.PromptTuningConfig(
      task_type=task, num_virtual_tokens=args.prompt))
  opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-3,
                          weight_decay=0.1)
  return model, opt, (ids.to(device), torch.ones_like(ids).to(device), labels.to(device))


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--family', default='t5', choices=['t5', *FAMILY_SIZES])
  p.add_argument('--size', default='cpu_tiny', choices=sorted(SIZES),
                 help='RoBERTa / GPT-2: cpu_tiny, base or large (train_throughput.FAMILY_SIZES).')
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

  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  dtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16}[args.dtype]
  setup = t5_setup if args.family == 't5' else family_setup
  model, opt, (ids, mask, labels) = setup(args, device, dtype)

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
      'family': args.family, 'size': args.size, 'backend': device, 'torch_threads': torch.get_num_threads(),
      'batch': args.batch, 'inputs': args.inputs, 'prompt': args.prompt,
      'targets': 1 if args.family == 'roberta' else args.targets,
      'dtype': args.dtype, 'accum_steps': args.accum_steps, 'step_s': seconds, 'step_s_rounds': rounds, 'examples_s': args.batch / seconds,
      'tokens_s': args.batch * (ids.shape[1] + args.prompt
                                + (labels.shape[1] if args.family == 't5' else 0)) / seconds,
      'peak_mem_gb': torch.cuda.max_memory_allocated() / 1e9 if device == 'cuda' else None,
      'loss': float(loss)}))


if __name__ == '__main__':
  main()
