"""Weak labels: a bag-of-pieces classifier fit on IMDB labels SST-2's training text."""
import csv
import gzip
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse

from conftest import REPO, shared_path
from prompt_recycling import objectives
from prompt_recycling import weak_labels


def test_windows_cut_long_texts_and_keep_short_ones_whole():
  texts = [np.arange(100), np.arange(10)]
  cut, labels = weak_labels.windows(texts, np.array([1, 0]), per_text=3, min_window=16,
                                    max_window=62, seed=0)
  assert labels.tolist() == [1, 1, 1, 0, 0, 0]
  for window in cut[:3]:  # Contiguous pieces of the long text, of an allowed length.
    assert 16 <= len(window) <= 62
    np.testing.assert_array_equal(window, np.arange(window[0], window[0] + len(window)))
  assert all(np.array_equal(w, np.arange(10)) for w in cut[3:])
  again, _ = weak_labels.windows(texts, np.array([1, 0]), 3, 16, 62, seed=0)
  assert all(np.array_equal(a, b) for a, b in zip(cut, again))


def test_bag_of_pieces_marks_presence_once_and_refuses_ids_out_of_range():
  matrix = weak_labels.bag_of_pieces([np.array([3, 3, 1]), np.array([0])], vocab_size=5)
  np.testing.assert_array_equal(matrix.toarray(), [[0, 1, 0, 1, 0], [1, 0, 0, 0, 0]])
  with pytest.raises(ValueError, match=r'\[0, 5\)'):
    weak_labels.bag_of_pieces([np.array([5])], vocab_size=5)


def test_fit_reaches_the_regularised_optimum():
  rng = np.random.default_rng(0)
  dense = (rng.random((300, 20)) < 0.3).astype(float)
  labels = (dense[:, 0] + dense[:, 1] - dense[:, 2] + 0.3 * rng.standard_normal(300) > 0.5)
  weights = weak_labels.fit(scipy.sparse.csr_matrix(dense), labels.astype(int), l2=1.0)
  # First-order condition of mean log-loss + l2/(2n)|w|^2 (bias unregularised).
  z = dense @ weights[:-1] + weights[-1]
  residual = (1 / (1 + np.exp(-z)) - labels) / len(labels)
  gradient = np.append(dense.T @ residual + weights[:-1] / len(labels), residual.sum())
  assert np.abs(gradient).max() < 1e-5, np.abs(gradient).max()
  assert weights[0] > 0 and weights[1] > 0 and weights[2] < 0  # The features that decide.
  with pytest.raises(ValueError, match='0 or 1'):
    weak_labels.fit(scipy.sparse.csr_matrix(dense), np.full(300, 2))


@pytest.fixture(scope='module')
def imdb_sample(tmp_path_factory):
  """Every 12th IMDB training review (2,084, both labels) as a small labelled *training* file."""
  source = shared_path('imdb', 'train.jsonl.gz')
  path = tmp_path_factory.mktemp('imdb') / 'train.jsonl'
  with gzip.open(source, 'rt') as f, open(path, 'w') as out:
    out.writelines(line for i, line in enumerate(f) if i % 12 == 0)
  return path


def test_labels_of_sst2_come_from_imdb_alone_and_carry_sentiment(tmp_path, imdb_sample):
  vocabulary = shared_path('t5', 'sentencepiece.model')
  dev = list(csv.DictReader(open(shared_path('sst2', 'dev.tsv')), delimiter='\t',
                            quoting=csv.QUOTE_NONE))
  gold = np.array([int(r['label']) for r in dev])
  # The dev sentences, under a training-split name, with every label flipped, then all 0:
  # the output must not change, since the unlabelled file's labels are never read.
  outputs = []
  for name, labels in (('flipped', 1 - gold), ('zeros', 0 * gold)):
    unlabelled = tmp_path / name / 'train.tsv'
    unlabelled.parent.mkdir()
    unlabelled.write_text('sentence\tlabel\n' + ''.join(
        f"{r['sentence']}\t{label}\n" for r, label in zip(dev, labels)))
    outputs.append(weak_labels.weak_labels(
        labelled=str(imdb_sample), unlabelled=str(unlabelled),
        output=str(tmp_path / name / 'weak.tsv'), vocabulary_path=str(vocabulary)))
  text = [open(p).read() for p in outputs]
  assert text[0] == text[1]
  rows = objectives.read_labelled(outputs[0], 'sentence', 'label')
  assert [s for s, _ in rows] == [r['sentence'].strip() for r in dev]
  predicted = np.array([label for _, label in rows])
  accuracy = 100 * (predicted == gold).mean()
  # Measured: 67.1% on the 872 sentences (95% Wilson interval ~ +-3.1) from 2,084 reviews;
  # 75.9% from all 25,000 (the shipped models' weak labels). Chance is 50.9%.
  assert accuracy > 60, accuracy


def test_evaluation_splits_are_refused_on_either_side(tmp_path, imdb_sample):
  vocabulary = str(shared_path('t5', 'sentencepiece.model'))
  with pytest.raises(ValueError, match='evaluation split'):
    weak_labels.weak_labels(labelled=str(imdb_sample),
                            unlabelled=str(shared_path('sst2', 'dev.tsv')),
                            output=str(tmp_path / 'x.tsv'), vocabulary_path=vocabulary)
  with pytest.raises(ValueError, match='evaluation split'):
    weak_labels.weak_labels(labelled=str(shared_path('imdb', 'test.jsonl.gz')),
                            unlabelled=str(shared_path('sst2', 'train.tsv')),
                            output=str(tmp_path / 'x.tsv'), vocabulary_path=vocabulary)
  assert not (tmp_path / 'x.tsv').exists()


def test_command_writes_the_tsv_the_stage2_gin_reads(tmp_path, imdb_sample):
  unlabelled = tmp_path / 'train.tsv'  # No label column: the text is all that is read.
  unlabelled.write_text('sentence\n' + ''.join(f'{t}\n' for t in (
      'a moving , beautifully acted film', 'dull , lifeless and far too long')))
  output = tmp_path / 'out' / 'weak.tsv'
  result = subprocess.run(
      [sys.executable, '-m', 'prompt_recycling.weak_labels',
       '--gin_file=gin_configs/runs/weak_labels_sst2.gin', f"--gin.OUTPUT='{output}'",
       f"--gin.weak_labels.labelled='{imdb_sample}'",
       f"--gin.weak_labels.unlabelled='{unlabelled}'",
       f"--gin.weak_labels.vocabulary_path='{shared_path('t5', 'sentencepiece.model')}'",
       '--gin.weak_labels.min_window=16'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip().splitlines()[-1] == str(output)
  assert output.read_text().splitlines() == [
      'sentence\tlabel', 'a moving , beautifully acted film\t1',
      'dull , lifeless and far too long\t0']
