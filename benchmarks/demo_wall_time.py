r"""Wall time of README command 1 (`python -m prompt_recycling.demo`), cold, and where it goes.

    python benchmarks/demo_wall_time.py [--output_dir=/tmp/demo_bench] [-- --targets=B,C ...]

Runs the demo in a subprocess from an empty output directory (so no
compilation cache, no finished prompt run is reused), then splits the time at the last prompt run's final export (its
`prompt.npy` mtime): prompt tuning on the source and the targets, then
zero-shot, recycling and evaluation. The issue's budget is 5 minutes on 2 CPU
cores. Load matters on a shared machine: the 1-minute load average before and
after is printed next to the times.

Prints one JSON line: wall_s, tune_s (start -> last run's export),
recycle_eval_s (the rest up to the end), runs, exit code, load averages, and
XLA_FLAGS as set here (the demo adds --xla_cpu_multi_thread_eigen=false itself
and runs --workers prompts at a time, one per core by default: pass demo flags
after `--`, e.g. `-- --workers=1`).
"""
import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--output_dir', default='/tmp/demo_bench')
  args, demo_args = parser.parse_known_args()
  out = pathlib.Path(args.output_dir)
  shutil.rmtree(out, ignore_errors=True)
  load_before = os.getloadavg()[0]
  start = time.time()
  done = subprocess.run([sys.executable, '-m', 'prompt_recycling.demo', f'--output_dir={out}',
                         *[a for a in demo_args if a != '--']],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
  wall = time.time() - start
  # A prompt run ends when it writes its final numpy export.
  exports = [p.stat().st_mtime for p in out.glob('runs/*/numpy_checkpoints/*/prompt.npy')]
  tune = max(exports) - start if exports else None
  print(json.dumps({
      'wall_s': round(wall, 1),
      'tune_s': round(tune, 1) if tune else None,
      'recycle_eval_s': round(wall - tune, 1) if tune else None,
      'runs': len(exports), 'exit_code': done.returncode,
      'load_1min_before': round(load_before, 2), 'load_1min_after': round(os.getloadavg()[0], 2),
      'xla_flags': os.environ.get('XLA_FLAGS', ''), 'demo_args': demo_args}))


if __name__ == '__main__':
  main()
