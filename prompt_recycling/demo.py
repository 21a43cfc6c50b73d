r"""The embedded default: recycle SST-2 prompts between small T5s and show the table.

    python -m prompt_recycling.demo [--output_dir=recycling_demo] [--train_steps=500]

Runs offline from what ships in `prompt_recycling/assets/`: three small T5 1.1
models this project pretrained itself (`assets/models/README.md`: A and B,
"mini" with seeds 1 and 2; C, the narrower "mini_narrow", seed 3), an SST-2
sample and the T5 vocabulary. It tunes 10 prompts on A (5 seeds x class-label
and sampled-vocabulary inits; 500 steps of 8 sentences), tunes one on each
target (the reference recycling is measured against), recycles A's prompts to
B and C with every recycler, evaluates everything on
all 872 SST-2 validation sentences and prints the recycling paper's table with
95% intervals (`results.py`). Details go to
OUTPUT_DIR/log.txt; `--verbosity=0` shows them on the terminal.

Prompts are tuned, recycled and evaluated `--workers` at a time (default: one
per CPU core), each on one thread: XLA's CPU ops run single-threaded here
(--xla_cpu_multi_thread_eigen=false), because these models' ops are too small
to gain from being split over cores (an evaluation pass is faster on one
thread than on two) and runs side by side use the cores instead. The numbers
depend on neither the worker count nor the number of cores.
"""
import collections
import math
import os
import pathlib
from typing import Optional

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')  # TensorFlow (SeqIO's data) is chatty.

from absl import flags  # pylint: disable=g-import-not-at-top
import jax  # pylint: disable=g-import-not-at-top

from prompt_recycling import cli  # pylint: disable=g-import-not-at-top
from prompt_recycling import evaluation  # pylint: disable=g-import-not-at-top
from prompt_recycling import family_checkpoints  # pylint: disable=g-import-not-at-top
from prompt_recycling import protocol  # pylint: disable=g-import-not-at-top
from prompt_recycling import results as results_lib  # pylint: disable=g-import-not-at-top
from prompt_recycling.recycling import base  # pylint: disable=g-import-not-at-top
from prompt_recycling.recycling import report  # pylint: disable=g-import-not-at-top
from prompt_recycling.recycling import vocab  # pylint: disable=g-import-not-at-top

ASSETS = pathlib.Path(__file__).resolve().parent / 'assets'
SHIPPED = {'A': 'mini_a', 'B': 'mini_b', 'C': 'mini_c'}
# Deliberately shorter than the papers' 100 tokens: on A at 100 steps, measured on all 872
# validation sentences over 2 seeds x 2 inits, 5- and 10-token prompts reach 66-67% where
# 20 tokens reach 64% and 50 tokens 58% (REPRODUCTION.md); shorter is also cheaper.
PROMPT_LENGTH = 10
# Deliberately smaller than the papers' 32: with the same sentences seen, four times as many
# updates. On the shipped A (10 tokens, lr 0.3, all 872 sentences), four prompts tuned 400
# steps of 8 reach 69.7-71.6% where the demo's ten tuned 100 steps of 32 spread from 51% to
# 72% (REPRODUCTION.md); a step of 8 costs about a quarter of a step of 32 on CPU.
TRAIN_BATCH_SIZE = 8
EVAL_BATCH_SIZE = 32
# 'negative' / 'positive' are one piece + EOS: 2 target tokens cut nothing; 4 would add two
# padding positions' vocabulary-wide logits, 21% more FLOPs per train step.
FEATURE_LENGTHS = {'inputs': 64, 'targets': 2}
LEARNING_RATE = 0.3  # The papers' (Adafactor).
INITS = ('class_labels', 'sampled_vocab')
RECYCLERS = ('v2v-lin', 'lin-comb', 'v2v-nn', 'neural-projector', 'relative', 'nearest-neighbor')

_OUTPUT_DIR = flags.DEFINE_string('output_dir', 'recycling_demo', 'Where runs and results go.')
_TRAIN_STEPS = flags.DEFINE_integer('train_steps', 500, 'Prompt-tuning steps per prompt (of '
                                    f'{TRAIN_BATCH_SIZE} sentences each).')
_SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2', '3', '4'],
                           'Seeds of the prompts tuned on model A (each with both inits).')
_EVAL_EXAMPLES = flags.DEFINE_integer('eval_examples', None, 'Evaluate on a seeded random subset '
                                      'of this many validation sentences (default: all 872).')
_TARGETS = flags.DEFINE_list('targets', ['B', 'C'], 'Target models: B (A\'s architecture, '
                             'another seed) and/or C (narrower: embed 48).')
_WORKERS = flags.DEFINE_integer('workers', None, 'Prompts tuned, recycled and evaluated at a '
                                'time, in threads (default: one per CPU core this process may '
                                'use); the results do not depend on it.', lower_bound=1)
_MODEL_A = flags.DEFINE_string('model_a', None, 'Source T5X/HF checkpoint (default: shipped A).')
_MODEL_B = flags.DEFINE_string('model_b', None, 'Target T5X/HF checkpoint (default: shipped B).')
_MODEL_C = flags.DEFINE_string('model_c', None, 'Target T5X/HF checkpoint (default: shipped C).')

ABOUT = """\
What these numbers are: SST-2 validation accuracy ({sentences}, rank classification of
'negative' / 'positive') of {prompts} {length}-token prompts tuned on model A for {steps} steps of
{batch} sentences and recycled to the targets without any SST-2 data or training on them, next to
each target's zero-shot accuracy (no prompt) and a prompt tuned directly on it. Intervals are
95%: Student's t over the prompts for a mean, Wilson for a success rate (over prompts) or a single
accuracy (over the sentences).
What they are not: the papers' numbers. A and B (embed 64, 3+3 layers, seeds 1 and 2) and C
(embed 48, 3+3 layers, seed 3) are tiny T5 1.1 models this project pretrained on 2 CPU cores
(span corruption and LM adaptation on Wikipedia, IMDB and SST-2 training text, mixed with IMDB
review sentiment; then SST-2's training sentences labelled by an IMDB-trained classifier, the
sentiment skill gated by the prefix 'imdb review:' that a prompt has to stand in for; SST-2's
own labels never entered); the papers used T5 1.1 lm100k Base and Large, 100-token prompts and
30k steps of 32. Their token tables are still close to random codes, unrelated between seeds
(the token-map line above), so no recycler here has shared structure to carry a prompt with.
Recipe and losses: prompt_recycling/assets/models/README.md."""


def about(num_prompts: int, train_steps: int, eval_examples) -> str:
  """The closing text, stating the settings this run actually used."""
  sentences = ('all 872 sentences' if eval_examples is None or eval_examples >= 872 else
               f'a seeded sample of {eval_examples} of the 872 sentences')
  return ABOUT.format(sentences=sentences, prompts=num_prompts, length=PROMPT_LENGTH,
                      steps=train_steps, batch=TRAIN_BATCH_SIZE)


def models(names, overrides=None):
  """The shipped checkpoints (or the given paths) of `names`: name -> {'path'}."""
  found = {}
  for name in names:
    if (overrides or {}).get(name):
      # Checked before any tuning, not when the model's turn comes (local paths only).
      if '://' not in overrides[name] and not os.path.exists(overrides[name]):
        raise FileNotFoundError(f'--model_{name.lower()}={overrides[name]}: no such checkpoint.')
      found[name] = {'path': overrides[name]}
      continue
    if name not in SHIPPED:
      raise ValueError(f'No model {name} ships with the demo: give its checkpoint with '
                       f'--model_{name.lower()}.')
    directory = SHIPPED[name]
    checkpoints = sorted((ASSETS / 'models' / directory).glob('checkpoint_*'))
    if not checkpoints:
      raise FileNotFoundError(f'The demo model {ASSETS / "models" / directory} is missing from '
                              'this checkout; see prompt_recycling/assets/models/README.md.')
    found[name] = {'path': str(checkpoints[-1])}
  return found


def verdict(rows, chance: Optional[float] = None) -> str:
  """Plain-language reading of the summary rows: what is signal, what is noise.

  `chance` (percent) is the accuracy of always giving the evaluated examples'
  most frequent answer (`majority_accuracy`). The paper's success rule beats
  the target's zero-shot accuracy; where that is below chance (a model whose
  untriggered answer leans the wrong way), a prompt that only brings the
  target to chance beats it, so the reading also says which means clear chance.
  """
  lines = []
  for target in sorted({r['target'] for r in rows}):
    mine = [r for r in rows if r['target'] == target]
    base = mine[0]
    tuned = next((r for r in mine if r['recycler'] == results_lib.TUNED), None)
    text = (f"{target}: zero-shot {base['baseline']:.1f}% "
            f"[{base['baseline_low']:.1f}, {base['baseline_high']:.1f}]")
    if tuned:
      if tuned['mean_low'] > base['baseline_high']:
        gap = 'clearly above it'
      elif tuned['mean_high'] < base['baseline_low']:
        gap = 'clearly below it'
      else:
        gap = 'within noise of it'
      text += f"; a prompt tuned on {target}: {tuned['mean']:.1f}% ({gap})"
    lines.append(text + '.')
    recycled = [r for r in mine if r['source'] != r['target']]
    above = [r['recycler'] for r in recycled
             if not math.isnan(r['mean_low']) and r['mean_low'] > base['baseline_high']]
    below = [r['recycler'] for r in recycled
             if not math.isnan(r['mean_high']) and r['mean_high'] < base['baseline_low']]
    if recycled:
      lines.append(f"  recycled from {recycled[0]['source']}: mean above zero-shot beyond the "
                   f"noise: {', '.join(above) or 'none'}; below it: {', '.join(below) or 'none'}; "
                   'the rest are within noise of zero-shot.')
    if chance is not None and base['baseline_high'] < chance:
      clear = [r['recycler'] for r in recycled
               if not math.isnan(r['mean_low']) and r['mean_low'] > chance]
      lines.append(f'  {target} answers worse than chance ({chance:.1f}%, always the most '
                   'frequent label) without a prompt, so beating its zero-shot is no evidence of '
                   'transfer: means above chance beyond the noise: '
                   f"{', '.join(clear) or 'none'}.")
  return '\n'.join(lines)


def majority_accuracy(task: str, split: str, max_examples: Optional[int]) -> float:
  """Chance: percent of the evaluated examples whose answer is the most frequent one."""
  examples = evaluation.read_examples(task, split, max_examples)
  counts = collections.Counter(ex['targets_pretokenized'] for ex in examples)
  return 100 * max(counts.values()) / len(examples)


def vocabulary_map_fit(source, target) -> float:
  """How far a linear map carries tokens between two models: v2v-lin's held-out cosine.

  The least-squares map from `source` [vocab, embed] to `target` [vocab,
  embed'] rows is fit on 90% of the recycling paper's fit words and scored on
  the other 10% (`recycling.report.held_out_fit`): 1.0 for tables that are a
  rotation of each other, about 0 for tables that share no linear structure,
  where no vocabulary-based recycler has anything to carry a prompt with.
  """
  ids = vocab.select(vocab.resolve('auto', 'v2v-lin'), source.shape[0])
  fit = report.held_out_fit(base.get_recycler('v2v-lin'), source[ids], target[ids],
                            jax.random.key(0))
  return float(fit['cosine'])


def single_threaded_xla() -> None:
  """XLA's CPU ops on one thread each (see the module docstring); before JAX starts its backend."""
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
  if xla_bridge.backends_are_initialized():
    raise RuntimeError('demo.main must run before JAX starts its backend: it sets XLA_FLAGS.')
  os.environ['XLA_FLAGS'] = ' '.join(
      [os.environ.get('XLA_FLAGS', ''), '--xla_cpu_multi_thread_eigen=false']).strip()


def main(argv):
  del argv
  single_threaded_xla()
  workers = _WORKERS.value or (len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity')
                               else os.cpu_count() or 1)  # macOS has no sched_getaffinity.
  out = pathlib.Path(_OUTPUT_DIR.value)
  out.mkdir(parents=True, exist_ok=True)
  cli.log_to(str(out / 'log.txt'))
  # The demo compiles the same steps for every prompt run and target: a
  # persistent cache turns all but the first compile of each into a lookup.
  if not jax.config.jax_compilation_cache_dir:
    jax.config.update('jax_compilation_cache_dir', str(out / 'jax_cache'))
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
  unknown = set(_TARGETS.value) - {'B', 'C'}
  if unknown or not _TARGETS.value:
    raise ValueError(f'--targets={_TARGETS.value}: unknown {sorted(unknown)}; choose from B, C.')
  found = models(['A', *_TARGETS.value],
                 {'A': _MODEL_A.value, 'B': _MODEL_B.value, 'C': _MODEL_C.value})
  results = protocol.run(
      models=found, source='A', targets=_TARGETS.value, task='glue_sst2_v2', output_dir=str(out),
      recyclers={name: {'name': name} for name in RECYCLERS},
      seeds=[int(s) for s in _SEEDS.value], inits=list(INITS),
      prompt_length=PROMPT_LENGTH, train_steps=_TRAIN_STEPS.value,
      batch_size=TRAIN_BATCH_SIZE, eval_batch_size=EVAL_BATCH_SIZE,
      task_feature_lengths=FEATURE_LENGTHS, learning_rate=LEARNING_RATE,
      eval_split='validation', eval_mode='rank', max_eval_examples=_EVAL_EXAMPLES.value,
      vocabulary='auto', population=5000,
      vocabulary_path=str(ASSETS / 't5' / 'sentencepiece.model'), data_dir=str(ASSETS / 'data'),
      workers=workers)
  rows = results_lib.summarize(results)
  chance = majority_accuracy('glue_sst2_v2', 'validation', _EVAL_EXAMPLES.value)
  results_lib.plot(rows, out / 'summary.png', 'accuracy', chance=chance)  # Redrawn with chance.
  print()
  print((out / 'summary.md').read_text())
  print(verdict(rows, chance))
  tables = {n: family_checkpoints.load_token_embedding(found[n]['path']) for n in found}
  for target in _TARGETS.value:
    if tables[target].shape[0] == tables['A'].shape[0]:  # Row-aligned: one shared vocabulary.
      print(f"Token map A -> {target} (v2v-lin's least squares, 10% of its fit words held out): "
            f"cosine {vocabulary_map_fit(tables['A'], tables[target]):.2f} with {target}'s true "
            'rows (1.00: it carries every token; near 0: the tables share nothing a recycler '
            'can use).')
  print()
  print(about(len(INITS) * len(_SEEDS.value), _TRAIN_STEPS.value, _EVAL_EXAMPLES.value))
  print(f'\nPer-prompt rows: {out / "results.csv"}; plot: {out / "summary.png"}; '
        f'log: {out / "log.txt"}')


if __name__ == '__main__':
  cli.run(main)
