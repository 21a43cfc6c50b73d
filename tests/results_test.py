"""The results table's statistics against hand-computed values, and the files it writes."""
import csv

import pytest

from prompt_recycling import results


def test_wilson_matches_hand_computed_intervals():
  # 8 of 10: p = .8, z = 1.95996; centre = (.8 + .19207) / 1.38415, half = z sqrt(.016 + .0096) / 1.38415.
  assert results.wilson(8, 10) == pytest.approx((0.49016, 0.94331), abs=1e-5)
  # The edges stay inside [0, 1] and are not degenerate, unlike p +- z sqrt(p(1-p)/n).
  low, high = results.wilson(0, 10)
  assert low == 0.0 and high == pytest.approx(0.27753, abs=1e-5)
  assert results.wilson(10, 10)[1] == pytest.approx(1.0)
  # A large n shrinks to the normal interval: 436/872 -> 50% +- 3.32 points.
  low, high = results.wilson(436, 872)
  assert (high - low) / 2 == pytest.approx(1.95996 * (0.25 / 872) ** 0.5, rel=5e-3)


def test_mean_interval_is_students_t():
  mean, low, high = results.mean_interval([1, 2, 3, 4, 5])
  # t(0.975, 4) = 2.776445; sd = 1.581139; half = 2.776445 * 1.581139 / sqrt(5).
  assert (mean, low, high) == pytest.approx((3.0, 3 - 1.963243, 3 + 1.963243), abs=1e-6)
  assert results.mean_interval([7.0])[0] == 7.0


def test_summary_counts_successes_with_intervals_and_writes_the_files(tmp_path):
  rows = [results.Result('-', 'B', results.BASELINE, '-', 50.0, 872),
          results.Result('B', 'B', results.TUNED, 't', 80.0, 872)]
  rows += [results.Result('A', 'B', 'v2v-lin', f'p{i}', v, 872)
           for i, v in enumerate([60.0, 40.0, 55.0, 52.0])]
  summary = {r['recycler']: r for r in results.write(rows, tmp_path, 'accuracy')}
  lin = summary['v2v-lin']
  assert (lin['n'], lin['successes'], lin['success_rate']) == (4, 3, 0.75)
  assert (lin['success_low'], lin['success_high']) == pytest.approx(results.wilson(3, 4))
  assert lin['mean'] == pytest.approx(51.75) and lin['mean_low'] < 40 < 60 < lin['mean_high']
  # The zero-shot accuracy and the single tuned prompt carry Wilson intervals over 872 examples.
  assert (lin['baseline_low'], lin['baseline_high']) == pytest.approx(
      tuple(100 * x for x in results.wilson(436, 872)))
  tuned = summary[results.TUNED]
  assert tuned['n'] == 1 and tuned['mean_low'] < 80 < tuned['mean_high']
  with (tmp_path / 'results.csv').open() as f:
    table = list(csv.DictReader(f))
  assert list(table[0]) == ['source', 'target', 'recycler', 'prompt', 'accuracy', 'num_examples']
  assert [r['recycler'] for r in table].count('v2v-lin') == 4
  text = (tmp_path / 'summary.md').read_text()
  assert '| A -> B | v2v-lin | 4 | 51.8 [' in text and '3/4 = 75%' in text
  assert 'measured on 872 examples' in text
  assert (tmp_path / 'summary.png').stat().st_size > 10_000
  assert results.read(tmp_path / 'results.csv') == [
      results.Result(r.source, r.target, r.recycler, r.prompt, round(r.metric, 4), 872)
      for r in rows]


def test_plot_draws_chance_where_given(tmp_path):
  """A chance line changes the picture (and widens the axis to reach it); without one, the same."""
  rows = results.summarize(
      [results.Result('-', 'C', results.BASELINE, '-', 39.3, 872)] +
      [results.Result('A', 'C', 'relative', f'p{i}', 44.0 + i, 872) for i in range(4)])
  results.plot(rows, tmp_path / 'plain.png', 'accuracy')
  results.plot(rows, tmp_path / 'again.png', 'accuracy', chance=None)
  results.plot(rows, tmp_path / 'chance.png', 'accuracy', chance=50.9)
  plain, again, chance = [(tmp_path / f'{n}.png').read_bytes() for n in ('plain', 'again', 'chance')]
  assert plain == again and chance != plain
