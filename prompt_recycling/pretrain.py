r"""Pretrains a small T5 1.1 from scratch the way the lm100k checkpoints were made.

    python -m prompt_recycling.pretrain \
      --gin_file=gin_configs/models/t5_1_1/mini.gin --gin_file=gin_configs/runs/pretrain.gin \
      --gin.MODEL_DIR="'/tmp/mini_seed1'" --gin.SEED=1 \
      --gin.CORPUS="['../shared/data/pretrain_corpus/enwiki_wikiextractor_sample.jsonl.gz']" \
      --gin.VOCABULARY_PATH="'prompt_recycling/assets/t5/sentencepiece.model'"

Every parameter of a randomly initialised T5 trains, first with span
corruption (steps 1 .. TRAIN_STEPS - LM_ADAPTATION_STEPS), then with LM
adaptation (prefix LM) for the last LM_ADAPTATION_STEPS, as the lm100k models
had 1M + 100k steps. It goes through the same trainer, sharding and orbax
checkpoints as prompt tuning: the model's parameters are the "prompt method"'s
parameters (`whole_model`). Rerunning the command resumes; the phase follows
from the step. At the end the parameters are exported as a T5X checkpoint,
`MODEL_DIR/t5x/checkpoint_<TRAIN_STEPS>` (bfloat16 arrays by default), which
`prompt_recycling.train` (INITIAL_CHECKPOINT_PATH) and the recyclers read.
With `pretrain.init_checkpoint` a run continues such an export instead of a
random initialisation: a second stage on another mixture
(gin_configs/runs/pretrain_demo_stage2.gin).
"""
import dataclasses
import logging
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax

from prompt_recycling import checkpoints
from prompt_recycling import cli
from prompt_recycling import data
from prompt_recycling import gin_setup
from prompt_recycling import objectives
from prompt_recycling import partitioning
from prompt_recycling import prompts
from prompt_recycling import trainer
from prompt_recycling import vocabulary
from prompt_recycling.models import t5

@dataclasses.dataclass(frozen=True)
class Source:
  """One kind of training batch: `examples(start)` yields examples from stream position `start`.

  Attributes:
    name: for logs ('span_corruption', 'prefix_lm', 'supervised:imdb review:').
    examples: start position -> endless, deterministic example iterator.
    lengths: its batches' feature lengths.
    weight: batches of this source per round of the phase's interleave.
  """
  name: str
  examples: Callable[[int], Iterator[Dict[str, np.ndarray]]]
  lengths: Dict[str, int]
  weight: int = 1


# (number of steps, the sources whose batches interleave in it).
Phase = Tuple[int, Sequence[Source]]


def whole_model(model: t5.T5, initial: Optional[Any] = None) -> prompts.PromptMethod:
  """The model itself as what trains: `params` are its parameters, nothing is frozen.

  `init` ignores `frozen` (an empty tree) and returns T5's own initialisation,
  unboxed, or `initial` (a parameter tree of the model's shapes, e.g. a T5X
  checkpoint's) where given; the logical axes are the model's own, so the
  trainer shards the parameters and their optimizer moments exactly as it
  shards a frozen model.
  """
  tokens = jnp.ones((1, 1), jnp.int32)

  def init(rng, frozen):
    del frozen
    if initial is not None:
      return initial
    return nn.unbox(model.init(rng, tokens, tokens))['params']

  abstract = jax.eval_shape(model.init, jax.random.key(0), tokens, tokens)
  axes = nn.get_partition_spec(abstract)['params']
  return prompts.PromptMethod(init=init, encoder_args=lambda params, batch_size: {},
                              logical_axes=axes, model_params=lambda params, frozen: params)


def adamw_warmup_cosine(learning_rate: float, total_steps: int, warmup_steps: int,
                        weight_decay: float = 0.01, clip_norm: float = 1.0
                        ) -> optax.GradientTransformation:
  """AdamW (b2 = 0.98) with linear warm-up then cosine decay to 10%, gradients clipped.

  lr(t) = learning_rate * t / warmup_steps                       for t < warmup_steps
        = learning_rate * (0.1 + 0.9 * (1 + cos(pi * u)) / 2)    u = (t - warmup) / (total - warmup)

  T5 itself used Adafactor at 1e-2 with inverse-square-root decay over 1M
  steps. For a few thousand steps of a small model, Adam's per-parameter
  second moments with a short warm-up reach a lower loss sooner, and the
  cosine ends the run at a small learning rate, so the exported parameters
  are not mid-oscillation. b2 = 0.98 (not 0.999) follows the usual
  transformer recipe for short runs: the second moment tracks the fast
  early changes of the gradient scale. Memory (two moments per parameter) is
  no concern at this size.
  """
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, learning_rate, warmup_steps, max(total_steps, warmup_steps + 1),
      end_value=0.1 * learning_rate)
  return optax.chain(optax.clip_by_global_norm(clip_norm),
                     optax.adamw(schedule, b2=0.98, weight_decay=weight_decay))


def interleave(sources: Sequence[Source], step: int) -> Tuple[int, List[int]]:
  """Which source a phase's step (0-based) draws from, and each source's batches before it.

  Batches interleave in a fixed round of sum(weights) steps (weights 2, 1 ->
  A A B A A B ...), so every step's source and stream position are known
  without replaying the run: mixing by batch, not by example, lets each source
  keep its own feature lengths (a one-token label needs no 29-token target).
  """
  pattern = [i for i, source in enumerate(sources) for _ in range(source.weight)]
  rounds, offset = divmod(step, len(pattern))
  before = [rounds * source.weight + pattern[:offset].count(i) for i, source in enumerate(sources)]
  return pattern[offset], before


def phase_batches(phases: Sequence[Phase], batch_size: int,
                  start_step: int) -> Iterator[Dict[str, np.ndarray]]:
  """This host's batches from `start_step` on, through the phases in order.

  Step s (1-based) belongs to the first phase whose cumulative length reaches
  s; within a phase, its sources' batches interleave by weight (`interleave`),
  and each source's stream resumes at (its batches already drawn) *
  batch_size, so a resumed run continues exactly as an uninterrupted one.

  Args:
    phases: (steps, sources) in training order.
    batch_size: global examples per step.
    start_step: steps already done.
  """
  for steps, sources in phases:
    done = min(start_step, steps)
    start_step -= done
    if done == steps:
      continue
    _, before = interleave(sources, done)
    streams = [data.batches(source.examples(n * batch_size), batch_size, source.lengths)
               for source, n in zip(sources, before)]
    for step in range(done, steps):
      which, _ = interleave(sources, step)
      yield data.host_rows(next(streams[which]))


def pretrain(*, model_dir: str, model_config: t5.T5Config, corpus: Sequence[str],
             vocabulary_path: str, train_steps: int, lm_adaptation_steps: int,
             batch_size: int = 32, inputs_length: int = 128, lm_length: int = 64,
             learning_rate: float = 2e-3, warmup_steps: int = 200, weight_decay: float = 0.01,
             seed: int = 0, supervised: Sequence[Mapping[str, Any]] = (),
             unsupervised_weight: int = 1, min_chars: int = 200, max_corpus_documents: Optional[int] = None,
             max_corpus_tokens: Optional[int] = None, cache_dir: Optional[str] = None,
             save_every: int = 500, keep: int = 2, log_every: int = 50,
             export_dtype: Optional[str] = 'bfloat16', num_partitions: int = 1,
             init_checkpoint: Optional[str] = None, progress: bool = True) -> str:
  """Trains a T5 from scratch (span corruption, then LM adaptation); returns the T5X export.

  Args:
    model_dir: run directory (orbax checkpoints, resumable; `run_dir.py`).
    model_config: the T5 to train.
    corpus: training text files (`objectives.read_documents`; evaluation
      splits are refused).
    vocabulary_path: the T5 SentencePiece model.
    train_steps: total steps, both phases (t5x's TRAIN_STEPS).
    lm_adaptation_steps: the last steps, LM adaptation; the ones before are
      span corruption.
    batch_size: global examples per step.
    inputs_length: span-corruption encoder length; raw chunks are sized so
      corrupted inputs fill it exactly, as T5 does (128 -> 141-token chunks,
      29 targets).
    lm_length: LM adaptation's input and target length; a chunk of
      lm_length - 1 tokens is split at a uniform point. Short, because the
      [targets, vocab] logits dominate a step of these small models.
    learning_rate, warmup_steps, weight_decay: `adamw_warmup_cosine`.
    seed: parameter initialisation, dropout and data order; models that differ
      only by it are the "different random seeds" pairs recycling needs.
    supervised: labelled training tasks mixed into both phases, each a dict
      {'path', 'prefix', 'labels' (label words by label id), 'weight'
      (batches per round, default 1), 'inputs_length' (default
      inputs_length), 'min_window' (shortest window of a longer text,
      default 16), 'text_field', 'label_field', 'untriggered' (fraction of
      decoy-prefixed, coin-labelled examples, default 0), 'decoy_pieces'
      ([low, high) ids the decoys draw from, default every ordinary piece;
      SentencePiece numbers pieces by score, so [3, 10000) are common words)};
      `objectives.read_labelled` / `supervised_examples`. No labelled example
      of a task reported later may enter (SST-2's labels never do).
    unsupervised_weight: the phase objective's batches per round of the
      interleave with the supervised tasks.
    min_chars: shortest corpus document kept.
    max_corpus_documents, max_corpus_tokens: read at most this much corpus
      (tests; the whole Wikipedia sample is 13.75M tokens, 3 s to tokenize).
    cache_dir: where the token stream is cached (default MODEL_DIR/corpus).
    save_every, keep, log_every: checkpoint period, checkpoints kept, metric
      period.
    export_dtype: dtype of the exported T5X arrays ('bfloat16' halves them;
      None keeps float32).
    num_partitions: size of the mesh's `model` axis.
    init_checkpoint: a T5X checkpoint to continue from instead of a random
      initialisation (a second stage of pretraining on another mixture): its
      parameters, read as float32, start the run; the optimizer starts fresh
      (T5X exports hold no optimizer state), and the phases, learning-rate
      schedule and data streams count from this run's step 0. As t5x numbers a
      fine-tuning run's checkpoints, the export is named by the total:
      `checkpoint_<N + train_steps>` for an init_checkpoint `.../checkpoint_N`.
    progress: show a progress bar.

  Returns:
    The exported checkpoint's path, MODEL_DIR/t5x/checkpoint_<train_steps>
    (plus N, above).

  Raises:
    ValueError: lm_adaptation_steps outside [0, train_steps].
    checkpoints.CheckpointError: init_checkpoint is unreadable or does not
      match model_config.
  """
  if not 0 <= lm_adaptation_steps <= train_steps:
    raise ValueError(f'LM_ADAPTATION_STEPS={lm_adaptation_steps} must be in [0, '
                     f'TRAIN_STEPS={train_steps}]: they are the last steps of the run.')
  initial, step_offset = None, 0
  if init_checkpoint:  # Checked before the corpus is read.
    loaded, _ = checkpoints.load_params(init_checkpoint)
    checkpoints.validate_params(loaded, model_config, init_checkpoint)
    initial = jax.tree.map(lambda x: np.asarray(x, np.float32), loaded)
    step_offset = checkpoints.step_of(init_checkpoint) or 0
  vocab = vocabulary.get_vocabulary(vocabulary_path)
  stream = objectives.cached_token_stream(
      corpus, vocab, cache_dir or f'{model_dir}/corpus', min_chars=min_chars,
      max_documents=max_corpus_documents, max_tokens=max_corpus_tokens)
  chunk_length, targets_length = objectives.chunk_length_for(inputs_length)
  span_rows = objectives.chunks(stream, chunk_length)
  lm_rows = objectives.chunks(stream, lm_length - 1)
  span = Source('span_corruption',
                lambda start: objectives.examples(span_rows, 'span_corruption', seed, start),
                {'inputs': inputs_length, 'targets': targets_length}, unsupervised_weight)
  lm = Source('prefix_lm', lambda start: objectives.examples(lm_rows, 'prefix_lm', seed, start),
              {'inputs': lm_length, 'targets': lm_length}, unsupervised_weight)
  tasks = [_supervised_source(task, i, vocab, seed, inputs_length)
           for i, task in enumerate(supervised)]
  phases = [(train_steps - lm_adaptation_steps, [span] + tasks),
            (lm_adaptation_steps, [lm] + tasks)]
  logging.info('Corpus: %d tokens; %d chunks of %d for span corruption, %d of %d for LM '
               'adaptation; supervised: %s.', len(stream), len(span_rows), chunk_length,
               len(lm_rows), lm_length - 1, [t.name for t in tasks])

  model = t5.T5(model_config)
  run_info = {'model_config': model_config, 'corpus': [str(p) for p in corpus],
              'corpus_tokens': len(stream), 'seed': seed, 'batch_size': batch_size,
              'phases': [(steps, [(src.name, src.weight, src.lengths) for src in sources])
                         for steps, sources in phases]}
  if init_checkpoint:
    run_info['init_checkpoint'] = str(init_checkpoint)
  state = trainer.train(
      model=model, frozen={}, method=whole_model(model, initial),
      tx=adamw_warmup_cosine(learning_rate, train_steps, warmup_steps, weight_decay),
      mesh=partitioning.make_mesh(num_partitions),
      make_batches=lambda start: phase_batches(phases, batch_size, start),
      total_steps=train_steps, model_dir=str(model_dir), run_info=run_info,
      batch_size=batch_size, seed=seed, save_every=save_every, keep=keep, log_every=log_every,
      enable_dropout=model_config.dropout_rate > 0, progress=progress)
  params = jax.device_get(state.params)
  export_step = step_offset + int(state.step)
  export = f'{model_dir}/t5x/checkpoint_{export_step}'
  if jax.process_index() == 0:
    export = checkpoints.save_t5x(params, f'{model_dir}/t5x', export_step, dtype=export_dtype)
  return export


def _supervised_source(task: Mapping[str, Any], index: int, vocab, seed: int,
                       inputs_length: int) -> Source:
  """A `Source` of one labelled task: {'path', 'prefix', 'labels', 'weight', ...}."""
  unknown = set(task) - {'path', 'prefix', 'labels', 'weight', 'inputs_length', 'min_window',
                         'text_field', 'label_field', 'untriggered', 'decoy_pieces'}
  if unknown or not {'path', 'labels'} <= set(task):
    raise ValueError(f"pretrain.supervised[{index}] = {dict(task)}: give 'path' and 'labels' "
                     f"(and optionally 'prefix', 'weight', 'inputs_length', 'min_window', "
                     f"'text_field', 'label_field', 'untriggered', 'decoy_pieces'); "
                     f'unknown keys: {sorted(unknown)}.')
  pairs = objectives.read_labelled(task['path'], task.get('text_field', 'text'),
                                   task.get('label_field', 'label'))
  rows = objectives.labelled_rows(pairs, vocab, task.get('prefix', ''), task['labels'])
  target_length = max(len(t) for t in rows[2])
  inputs_length = int(task.get('inputs_length', inputs_length))
  label_targets = objectives.label_targets(vocab, task['labels'])
  decoys = task.get('decoy_pieces', (3, vocab.base_vocab_size))
  if not (isinstance(decoys, (list, tuple)) and len(decoys) == 2
          and 0 <= decoys[0] < decoys[1] <= vocab.base_vocab_size):
    raise ValueError(f"pretrain.supervised[{index}]['decoy_pieces'] = {decoys!r}: give [low, "
                     f'high) piece ids with 0 <= low < high <= {vocab.base_vocab_size} (the '
                     f'vocabulary\'s ordinary pieces).')
  low, high = decoys
  return Source(f"supervised:{task.get('prefix', '')}{task['path'].split('/')[-1]}",
                lambda start: objectives.supervised_examples(
                    rows, seed, index, inputs_length, start,
                    min_window=int(task.get('min_window', 16)),
                    untriggered=float(task.get('untriggered', 0.0)),
                    label_targets=label_targets,
                    decoy_pieces=(int(low), int(high))),
                {'inputs': inputs_length, 'targets': target_length}, int(task.get('weight', 1)))


def main(argv):
  del argv
  cli.log_to(f"{gin.query_parameter('%MODEL_DIR')}/log.txt")  # INFO lines; the terminal shows warnings.
  export = pretrain()  # pylint: disable=missing-kwoa  (gin supplies the arguments)
  # After the call, so the operative config lists every pretrain argument used.
  gin_setup.write_operative_config(gin.query_parameter('%MODEL_DIR'))
  print(export)


if __name__ == '__main__':
  pretrain = gin.configurable(pretrain)  # Registered before the gin files are parsed.
  gin_setup.run(main)
