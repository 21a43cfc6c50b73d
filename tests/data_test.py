"""Batching helpers and evaluation subsets (`data.py`)."""
import gzip
import itertools
import json

from conftest import shared_path
from prompt_recycling import data


def test_sample_of_a_label_sorted_split_has_both_labels():
  # IMDB's test split as shipped: the first 12,500 reviews are all negative.
  with gzip.open(shared_path('imdb', 'test.jsonl.gz'), 'rt') as f:
    rows = [json.loads(line)['label'] for line in itertools.islice(f, 0, 25000, 10)]
  assert set(rows[:1000]) == {0}  # Why the first n would be wrong.
  picked = data.sample(list(enumerate(rows)), 200, seed=0)
  assert len(picked) == 200 and len({i for i, _ in picked}) == 200
  assert [i for i, _ in picked] == sorted(i for i, _ in picked)  # Original order kept.
  labels = [label for _, label in picked]
  assert 0.35 < sum(labels) / len(labels) < 0.65
  assert picked == data.sample(list(enumerate(rows)), 200, seed=0)  # Deterministic.
  assert picked != data.sample(list(enumerate(rows)), 200, seed=1)


def test_sample_everything_when_n_is_none_or_large():
  rows = list(range(7))
  assert data.sample(iter(rows), None) == rows
  assert data.sample(iter(rows), 7) == rows and data.sample(iter(rows), 70) == rows
  assert data.take(iter(rows), 3) == [0, 1, 2]
