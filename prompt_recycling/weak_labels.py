r"""Weak labels: a bag-of-pieces classifier fit on one labelled file labels another file's text.

    python -m prompt_recycling.weak_labels --gin_file=gin_configs/runs/weak_labels_sst2.gin

The demo's models learn sentiment from IMDB's labels, but the demo evaluates
SST-2, whose short, tokenised movie-review sentences a model trained on IMDB
windows reads poorly (assets/models/README.md). A linear classifier over the
SentencePiece pieces present in a text, fit on windows of the labelled
training file (IMDB), labels the unlabelled training text (SST-2's *training*
sentences, read without their label column) so that pretraining can see
in-domain sentences whose labels come from IMDB alone. No label of the
unlabelled file is read, and evaluation splits are refused on either side.

The output is a GLUE-style TSV (`<text_field>\tlabel`, a header row) that
`pretrain.supervised` reads like any labelled training file.
"""
import logging
import pathlib
from typing import List, Sequence, Tuple

import gin
import numpy as np
import scipy.optimize
import scipy.sparse

from prompt_recycling import gin_setup
from prompt_recycling import objectives
from prompt_recycling import vocabulary


def windows(texts: Sequence[np.ndarray], labels: np.ndarray, per_text: int, min_window: int,
            max_window: int, seed: int) -> Tuple[List[np.ndarray], np.ndarray]:
  """`per_text` random windows of each text, each with its text's label.

  `objectives.random_window`, as pretraining cuts IMDB reviews: a text longer
  than `max_window` pieces gives windows of a uniform length in [min_window,
  max_window] at a uniform offset; a shorter text is repeated whole.

  Args:
    texts: token ids per text.
    labels: [texts] integer labels.
    per_text: windows drawn from each text.
    min_window, max_window: window lengths, in pieces.
    seed: numpy seed of the draws.

  Returns:
    (windows, labels [texts * per_text]).
  """
  rng = np.random.default_rng(seed)
  out = [objectives.random_window(text, rng, min_window, max_window)
         for text in texts for _ in range(per_text)]
  return out, np.repeat(np.asarray(labels), per_text)


def bag_of_pieces(texts: Sequence[np.ndarray], vocab_size: int) -> scipy.sparse.csr_matrix:
  """[texts, vocab_size] 0/1 matrix: which pieces each text contains."""
  rows = np.repeat(np.arange(len(texts)), [len(t) for t in texts])
  columns = np.concatenate([np.asarray(t, np.int64) for t in texts]) if texts else np.zeros(0, int)
  if columns.size and (columns.min() < 0 or columns.max() >= vocab_size):
    raise ValueError(f'Token ids must lie in [0, {vocab_size}); found {columns.min()} .. '
                     f'{columns.max()}.')
  matrix = scipy.sparse.csr_matrix((np.ones(len(columns)), (rows, columns)),
                                   shape=(len(texts), vocab_size))
  matrix.data[:] = 1.0  # Repeated pieces were summed.
  return matrix


def fit(features: scipy.sparse.csr_matrix, labels: np.ndarray, l2: float = 10.0,
        max_iterations: int = 300) -> np.ndarray:
  """L2-regularised logistic regression by L-BFGS: weights [vocab] then the bias.

  Minimises mean(log(1 + exp(z)) - y z) + l2 / (2 n) |w|^2 with z = x.w + b
  (the bias is not regularised), from zeros.
  """
  labels = np.asarray(labels, np.float64)
  if set(np.unique(labels)) - {0.0, 1.0}:
    raise ValueError(f'Labels must be 0 or 1; found {sorted(set(np.unique(labels)))}.')
  n = features.shape[0]

  def loss_and_grad(w):
    z = features @ w[:-1] + w[-1]
    p = 1.0 / (1.0 + np.exp(-z))
    loss = np.sum(np.logaddexp(0.0, z) - labels * z) / n + l2 / (2 * n) * (w[:-1] @ w[:-1])
    g = (p - labels) / n
    return loss, np.append(features.T @ g + l2 / n * w[:-1], g.sum())

  result = scipy.optimize.minimize(loss_and_grad, np.zeros(features.shape[1] + 1), jac=True,
                                   method='L-BFGS-B', options={'maxiter': max_iterations})
  return result.x


def predict(weights: np.ndarray, features: scipy.sparse.csr_matrix) -> np.ndarray:
  """[texts] 0/1 labels of `fit`'s classifier."""
  return ((features @ weights[:-1] + weights[-1]) > 0).astype(np.int64)


def weak_labels(*, labelled: str, unlabelled: str, output: str, vocabulary_path: str,
                text_field: str = 'text', label_field: str = 'label',
                output_text_field: str = 'sentence', windows_per_text: int = 4,
                min_window: int = 16, max_window: int = 62, l2: float = 10.0,
                max_iterations: int = 300, seed: int = 0) -> str:
  """Fits the classifier on `labelled`'s windows, labels `unlabelled`'s texts, writes `output`.

  Args:
    labelled: labelled training file (`objectives.read_labelled` formats).
    unlabelled: training file whose texts are labelled (`objectives.read_documents`
      formats: a TSV's first column, or JSON lines' 'text'); its labels, if
      any, are never read.
    output: the TSV written (`<output_text_field>\tlabel`).
    vocabulary_path: the SentencePiece model whose pieces are the features.
    text_field, label_field: `labelled`'s fields.
    output_text_field: the output's text column.
    windows_per_text, min_window, max_window, seed: `windows`.
    l2, max_iterations: `fit`.

  Returns:
    `output`.

  Raises:
    ValueError: either file is an evaluation split, or a text holds a tab or a
      newline (the TSV could not keep it).
  """
  vocab = vocabulary.get_vocabulary(vocabulary_path)
  pairs = objectives.read_labelled(labelled, text_field, label_field)
  texts = [np.asarray(vocab.encode(text), np.int64) for text, _ in pairs]
  cut, cut_labels = windows(texts, np.array([label for _, label in pairs]), windows_per_text,
                            min_window, max_window, seed)
  weights = fit(bag_of_pieces(cut, vocab.vocab_size), cut_labels, l2, max_iterations)
  sentences = list(objectives.read_documents([unlabelled]))
  for number, sentence in enumerate(sentences, 1):
    if '\t' in sentence or '\n' in sentence:
      raise ValueError(f'{unlabelled}: text {number} holds a tab or a newline; the output TSV '
                       'cannot keep it.')
  predicted = predict(weights, bag_of_pieces([np.asarray(vocab.encode(s), np.int64)
                                              for s in sentences], vocab.vocab_size))
  pathlib.Path(output).parent.mkdir(parents=True, exist_ok=True)
  with open(output, 'w', encoding='utf-8') as f:
    f.write(f'{output_text_field}\tlabel\n')
    f.writelines(f'{s}\t{label}\n' for s, label in zip(sentences, predicted))
  logging.info('%s: %d texts labelled by a classifier fit on %d windows of %s (%.1f%% positive).',
               output, len(sentences), len(cut), labelled, 100 * predicted.mean())
  return output


def main(argv):
  del argv
  print(weak_labels())  # pylint: disable=missing-kwoa  (gin supplies the arguments)


if __name__ == '__main__':
  weak_labels = gin.configurable(weak_labels)  # Registered before the gin files are parsed.
  gin_setup.run(main)
