"""A recycling grid's results with their uncertainty: results.csv, summary.md, summary.png.

Every number carries the count it rests on and a 95% interval, so a reader can
tell a real difference between recyclers from noise:

* one prompt's accuracy on n examples: Wilson's score interval for a
  proportion (`wilson`); the target's zero-shot accuracy and the prompt tuned
  directly on the target are such single numbers;
* a recycler's mean accuracy over its k recycled prompts (source seeds x
  inits): Student's t interval over the k prompts (`mean_interval`). It
  measures how much the result moves with the source prompt, the variation the
  paper's protocol samples;
* a recycler's success rate, the share of its k prompts that beat the target's
  zero-shot accuracy (Lester et al. 2022): Wilson's interval over the k.

Two intervals that overlap are not evidence of a difference; `summary.md` says
so in its caption.
"""
import csv
import dataclasses
import json
import math
import pathlib
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import stats

TUNED = 'tuned on the target'  # A prompt tuned directly on the model it is evaluated on.
BASELINE = 'baseline'  # The target without a prompt (zero-shot).


@dataclasses.dataclass(frozen=True)
class Result:
  """One evaluated prompt: `metric` (in percent for accuracies) over `num_examples` examples."""
  source: str
  target: str
  recycler: str
  prompt: str
  metric: float
  num_examples: Optional[int] = None


def wilson(successes: float, n: int, confidence: float = 0.95) -> Tuple[float, float]:
  """Wilson's score interval for a proportion: (low, high) in [0, 1].

  p = successes / n, z the normal quantile;
  centre = (p + z^2 / 2n) / (1 + z^2 / n),
  half   = z sqrt(p (1 - p) / n + z^2 / 4n^2) / (1 + z^2 / n).
  Unlike the normal approximation it stays inside [0, 1] and is sensible at
  p = 0 or 1 and for small n (a success rate over 10 prompts).
  """
  if n <= 0:
    return float('nan'), float('nan')
  z = stats.norm.ppf(0.5 + confidence / 2)
  p = successes / n
  denominator = 1 + z * z / n
  centre = (p + z * z / (2 * n)) / denominator
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
  return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> Tuple[float, float, float]:
  """(mean, low, high): Student's t interval for the mean of `values` (nan bounds for one value)."""
  values = np.asarray(values, np.float64)
  mean = float(values.mean())
  if len(values) < 2:
    return mean, float('nan'), float('nan')
  half = stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(
      len(values))
  return mean, mean - half, mean + half


def accuracy_interval(percent: float, n: Optional[int]) -> Tuple[float, float]:
  """Wilson interval, in percent, of an accuracy in percent measured on n examples."""
  if not n:
    return float('nan'), float('nan')
  low, high = wilson(percent / 100 * n, n)
  return 100 * low, 100 * high


def summarize(results: Sequence[Result]) -> List[Dict[str, Any]]:
  """Per (source, target, recycler): the statistics of the module docstring.

  Returns:
    Rows {'source', 'target', 'recycler', 'n' (prompts), 'values', 'mean',
    'mean_low', 'mean_high', 'std', 'baseline', 'baseline_low',
    'baseline_high', 'num_examples', 'successes', 'success_rate',
    'success_low', 'success_high'}; for a single prompt (the tuned-on-target
    reference) the mean's interval is its accuracy's Wilson interval.
  """
  baselines = {r.target: r for r in results if r.recycler == BASELINE}
  groups: Dict[tuple, List[Result]] = {}
  for r in results:
    if r.recycler != BASELINE:
      groups.setdefault((r.source, r.target, r.recycler), []).append(r)
  rows = []
  for (source, target, recycler), members in groups.items():
    values = [r.metric for r in members]
    mean, low, high = mean_interval(values)
    if len(values) == 1:
      low, high = accuracy_interval(values[0], members[0].num_examples)
    base = baselines.get(target)
    baseline = base.metric if base else float('nan')
    base_low, base_high = accuracy_interval(baseline, base.num_examples if base else None)
    successes = int(sum(v > baseline for v in values))
    success_low, success_high = wilson(successes, len(values))
    rows.append({
        'source': source, 'target': target, 'recycler': recycler, 'n': len(values),
        'values': values, 'mean': mean, 'mean_low': low, 'mean_high': high,
        'std': float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
        'baseline': baseline, 'baseline_low': base_low, 'baseline_high': base_high,
        'num_examples': members[0].num_examples, 'successes': successes,
        'success_rate': successes / len(values), 'success_low': success_low,
        'success_high': success_high})
  return rows


def _interval(low: float, high: float, digits: int = 1) -> str:
  return '' if math.isnan(low) else f' [{low:.{digits}f}, {high:.{digits}f}]'


def markdown(rows: Sequence[Dict[str, Any]], metric: str) -> str:
  """The paper's table (success rate and mean per recycler x direction), with intervals."""
  examples = sorted({r['num_examples'] for r in rows if r['num_examples']})
  lines = [
      f'| source -> target | recycler | prompts | mean {metric} [95% CI] | '
      f'success rate [95% CI] | target zero-shot [95% CI] |',
      '|---|---|---:|---:|---:|---:|']
  for row in rows:
    success = ('-' if row['recycler'] == TUNED else
               f"{row['successes']}/{row['n']} = {100 * row['success_rate']:.0f}%"
               f"{_interval(100 * row['success_low'], 100 * row['success_high'], 0)}")
    lines.append(
        f"| {row['source']} -> {row['target']} | {row['recycler']} | {row['n']} | "
        f"{row['mean']:.1f}{_interval(row['mean_low'], row['mean_high'])} | {success} | "
        f"{row['baseline']:.1f}{_interval(row['baseline_low'], row['baseline_high'])} |")
  counts = ', '.join(map(str, examples)) or 'unknown'
  lines += ['', f'Each accuracy is measured on {counts} examples. Mean: Student\'s t interval over '
            'the prompts; success rate (a prompt beats the target\'s zero-shot accuracy): Wilson '
            'interval over the prompts; a single accuracy (zero-shot, one tuned prompt): Wilson '
            'interval over the examples. Overlapping intervals are no evidence of a difference.']
  return '\n'.join(lines) + '\n'


def write(results: Sequence[Result], out: pathlib.Path, metric: str) -> List[Dict[str, Any]]:
  """results.csv, summary.md, summary.json and summary.png in `out`; returns the summary rows."""
  with (out / 'results.csv').open('w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['source', 'target', 'recycler', 'prompt', metric, 'num_examples'])
    for r in results:
      writer.writerow([r.source, r.target, r.recycler, r.prompt, f'{r.metric:.4f}',
                       r.num_examples or ''])
  rows = summarize(results)
  (out / 'summary.md').write_text(markdown(rows, metric))
  (out / 'summary.json').write_text(json.dumps(rows, indent=2))
  plot(rows, out / 'summary.png', metric)
  return rows


def read(path: pathlib.Path) -> List[Result]:
  """The `Result`s of a results.csv that `write` wrote (the metric is its fifth column)."""
  with pathlib.Path(path).open(newline='') as f:
    reader = csv.reader(f)
    next(reader)
    return [Result(row[0], row[1], row[2], row[3], float(row[4]),
                   int(row[5]) if len(row) > 5 and row[5] else None) for row in reader]


def plot(rows: Sequence[Dict[str, Any]], path: pathlib.Path, metric: str,
         chance: Optional[float] = None) -> None:
  """One panel per source -> target pair: each recycler's prompts as dots, mean and 95% CI.

  The target's zero-shot accuracy (grey band: its interval), the prompt tuned
  on the target (green) and, if given, `chance` (the metric of always giving
  the most frequent answer; red, dotted) are reference lines; the axis fits
  the data.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  pairs = sorted({(r['source'], r['target']) for r in rows if r['source'] != r['target']})
  if not pairs:
    return
  recyclers = sorted({r['recycler'] for r in rows if r['source'] != r['target']})
  height = 1.0 + 0.42 * len(recyclers)
  fig, axes = plt.subplots(1, len(pairs), figsize=(5.2 * len(pairs), height), squeeze=False)
  rng = np.random.default_rng(0)
  for ax, (source, target) in zip(axes[0], pairs):
    shown = []
    for y, name in enumerate(recyclers):
      row = next((r for r in rows if (r['source'], r['target'], r['recycler']) ==
                  (source, target, name)), None)
      if row is None:
        continue
      values = np.asarray(row['values'])
      ax.scatter(values, y + rng.uniform(-0.15, 0.15, len(values)), s=12, color='tab:blue',
                 alpha=0.5, linewidths=0)
      if not math.isnan(row['mean_low']):
        ax.plot([row['mean_low'], row['mean_high']], [y, y], color='black', lw=2)
      ax.plot([row['mean']], [y], marker='|', color='black', ms=14, mew=2)
      shown += list(values) + [row['mean_low'], row['mean_high']]
    base = next((r for r in rows if r['target'] == target), None)
    tuned = next((r for r in rows if r['target'] == target and r['recycler'] == TUNED), None)
    if base is not None and not math.isnan(base['baseline']):
      ax.axvspan(base['baseline_low'], base['baseline_high'], color='grey', alpha=0.2, lw=0)
      ax.axvline(base['baseline'], color='grey', ls='--', lw=1,
                 label=f"{target} zero-shot {base['baseline']:.1f}")
      shown += [base['baseline_low'], base['baseline_high']]
    if tuned is not None:
      ax.axvline(tuned['mean'], color='tab:green', ls='-', lw=1.5,
                 label=f"tuned on {target} {tuned['mean']:.1f}")
      shown.append(tuned['mean'])
    if chance is not None:
      ax.axvline(chance, color='tab:red', ls=':', lw=1.5, label=f'chance {chance:.1f}')
      shown.append(chance)
    shown = [v for v in shown if not math.isnan(v)]
    if shown:
      span = max(shown) - min(shown)
      ax.set_xlim(min(shown) - 0.08 * span - 0.5, max(shown) + 0.08 * span + 0.5)
    ax.set_yticks(range(len(recyclers)), recyclers, fontsize=8)
    ax.set_ylim(-0.6, len(recyclers) - 0.4)
    ax.invert_yaxis()
    ax.set_xlabel(f'{metric} of the recycled prompt on {target}', fontsize=8)
    ax.set_title(f'{source} -> {target}: prompts (dots), mean and 95% CI', fontsize=9)
    ax.grid(axis='x', alpha=0.3)
    ax.legend(fontsize=7, loc='lower right', framealpha=0.8)
  fig.tight_layout()
  fig.savefig(path, dpi=130)
  plt.close(fig)
