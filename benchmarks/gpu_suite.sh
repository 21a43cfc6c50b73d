#!/bin/bash
# Every GPU measurement the issues ask for, in one go, each as JSON lines:
#   prompt tuning on T5 1.1 base / large / xl (batch 32, inputs 512 + prompt 100, targets 8, bf16),
#   HF PEFT on the same base shape (eager and torch.compile; skipped without torch + peft),
#   late prompt tuning vs prompt tuning on base, the same for RoBERTa-base and GPT-2 (124M) with
#   HF PEFT prompt tuning on their shapes (RoBERTa: 512 tokens, GPT-2: 248 + 8 = the LPT code's
#   256; prompt 5, batch 32, bf16) and RoBERTa-large (LPT's paper setting), and the recyclers at
#   32,128 x 768 -> 1,024 (the relative search at its default 1,000 steps).
#
#   bash benchmarks/gpu_suite.sh [results.jsonl]     # from the repository root
#
# Each command has its own time limit (LIMIT seconds, default 240), so one failure or
# out-of-memory leaves the others' numbers; stderr goes to <results>.log. About 10 minutes
# on one H100 by our estimate (not yet run: no GPU has been lent to this project's sessions).
set -u
out=${1:-gpu_results.jsonl}
log=${out%.jsonl}.log
limit=${LIMIT:-240}
: > "$out"
: > "$log"
export PYTHONPATH="$PWD:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
shape=(--batch=32 --inputs=512 --prompt=100 --targets=8 --dtype=bfloat16)

run() {  # Runs one benchmark; its JSON lines go to $out and stdout.
  echo "== $*" | tee -a "$log" >&2
  timeout "$limit" "$@" 2>>"$log" | grep '^{' | tee -a "$out"
  local rc=${PIPESTATUS[0]}
  [ "$rc" = 0 ] || echo "{\"failed\": \"$*\", \"exit\": $rc}" | tee -a "$out"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >>"$log" 2>&1
run python benchmarks/train_throughput.py --size=base "${shape[@]}"
run python benchmarks/train_throughput.py --size=large "${shape[@]}"
# XL: XLA's memory analysis first (nothing allocated), then the run with and without remat.
for remat in none minimal full; do
  run python benchmarks/train_throughput.py --size=xl "${shape[@]}" --remat=$remat --compile_only
done
run python benchmarks/train_throughput.py --size=xl "${shape[@]}" --steps=5 --rounds=3
run python benchmarks/train_throughput.py --size=xl "${shape[@]}" --steps=5 --rounds=3 --remat=full
if python -c 'import torch, transformers, peft' 2>>"$log"; then
  run python benchmarks/peft_baseline.py --size=base "${shape[@]}"
  run python benchmarks/peft_baseline.py --size=base "${shape[@]}" --compile
fi
run python benchmarks/lpt_vs_pt.py --size=base --batch=32 --inputs=512 --prompt=100 --dtype=bfloat16
for fam in roberta gpt2; do
  [ $fam = roberta ] && fam_shape=(--inputs=512) || fam_shape=(--inputs=248 --targets=8)
  fam_shape+=(--batch=32 --prompt=5 --dtype=bfloat16)
  run python benchmarks/lpt_vs_pt.py --family=$fam --size=base "${fam_shape[@]}"
  if python -c 'import torch, transformers, peft' 2>>"$log"; then
    run python benchmarks/peft_baseline.py --family=$fam --size=base "${fam_shape[@]}"
    run python benchmarks/peft_baseline.py --family=$fam --size=base "${fam_shape[@]}" --compile
  fi
done
run python benchmarks/lpt_vs_pt.py --family=roberta --size=large --batch=32 --inputs=512 --prompt=5 \
  --dtype=bfloat16
run python benchmarks/recycle_throughput.py --relative_steps=1000 --repeats=2
