r"""Pretrains a small T5 1.1 from scratch the way the lm100k checkpoints were made.

    python -m prompt_recycling.pretrain \
      --gin_file=gin_configs/models/t5_1_1/mini.gin --gin_file=gin_configs/runs/pretrain.gin \
      --gin.MODEL_DIR="'/tmp/mini_seed1'" --gin.pretrain.seed=1 \
      --gin.CORPUS="['../shared/data/pretrain_corpus/enwiki_wikiextractor_sample.jsonl.gz']" \
      --gin.VOCABULARY_PATH="'prompt_recycling/assets/t5/sentencepiece.model'"

Phase 1 trains every parameter with span corruption, phase 2 continues with
LM adaptation (prefix LM), through the same trainer, sharding and orbax
checkpoints as prompt tuning; rerunning resumes. The final parameters are
exported as a T5X checkpoint, `MODEL_DIR/t5x/checkpoint_<step>`, which
`prompt_recycling.train` (INITIAL_CHECKPOINT_PATH) and the recyclers read.
"""
from typing import Optional, Sequence

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import optax

from prompt_recycling import checkpoints
from prompt_recycling import data
from prompt_recycling import gin_setup
from prompt_recycling import objectives
from prompt_recycling import partitioning
from prompt_recycling import prompts
from prompt_recycling import trainer
from prompt_recycling import vocabulary
from prompt_recycling.models import t5


def whole_model(model: t5.T5) -> prompts.PromptMethod:
  """The model itself as what trains: params are its parameters, nothing is frozen."""
  tokens = jnp.ones((1, 1), jnp.int32)
  init = lambda rng, frozen: nn.unbox(model.init(rng, tokens, tokens))['params']
  axes = nn.get_partition_spec(jax.eval_shape(lambda: model.init(jax.random.key(0), tokens, tokens)))
  return prompts.PromptMethod(init, lambda params, batch_size: {}, axes['params'],
                              model_params=lambda params, frozen: params)


def adamw_cosine(learning_rate: float, total_steps: int, warmup_steps: int,
                 weight_decay: float = 0.01) -> optax.GradientTransformation:
  """AdamW, linear warm-up then cosine decay to 10%, updates clipped at norm 1.

  T5 pretrained with Adafactor and an inverse-square-root schedule over 1M
  steps; for a few thousand steps on small models AdamW with a short warm-up
  converges faster and more reliably, which is what matters here.
  """
  schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup_steps,
                                                max(total_steps, warmup_steps + 1),
                                                end_value=learning_rate * 0.1)
  return optax.chain(optax.clip_by_global_norm(1.0),
                     optax.adamw(schedule, b2=0.98, weight_decay=weight_decay))


def pretrain(*, model_dir: str, model_config: t5.T5Config, corpus: Sequence[str],
             vocabulary_path: str, span_corruption_steps: int, lm_adaptation_steps: int,
             batch_size: int = 32, inputs_length: int = 128, learning_rate: float = 2e-3,
             warmup_steps: int = 200, seed: int = 0, max_corpus_tokens: Optional[int] = None,
             cache_dir: Optional[str] = None, save_every: int = 500,
             export_dtype: Optional[str] = 'bfloat16', num_partitions: int = 1,
             progress: bool = True) -> str:
  """Trains from scratch; returns the exported T5X checkpoint's path.

  Args:
    model_dir: run directory (orbax checkpoints, resumable).
    model_config: the T5 to train.
    corpus: training text files (`objectives.read_documents`).
    vocabulary_path: the T5 SentencePiece model.
    span_corruption_steps, lm_adaptation_steps: the two phases' lengths.
    batch_size: examples per step.
    inputs_length: encoder length; raw chunks are sized so span-corrupted
      inputs fit it exactly, as T5 does.
    learning_rate, warmup_steps: `adamw_cosine`.
    seed: parameter initialisation and data order; different seeds give the
      different models recycling needs.
    max_corpus_tokens: read at most this many tokens of the corpus.
    cache_dir: where the tokenized chunks are cached (default MODEL_DIR/..).
    save_every: checkpoint period.
    export_dtype: dtype of the exported T5X arrays ('bfloat16' halves them).
    num_partitions: model-parallel mesh axis.
    progress: show a progress bar.
  """
  vocab = vocabulary.get_vocabulary(vocabulary_path)
  chunk_length, targets_length = objectives.chunk_length_for(inputs_length)
  chunks = objectives.cached_chunks(corpus, vocab, chunk_length,
                                    cache_dir or str(model_dir) + '_corpus_cache', max_corpus_tokens)
  phases = [('span_corruption', span_corruption_steps,
             {'inputs': inputs_length, 'targets': targets_length}),
            ('prefix_lm', lm_adaptation_steps,
             {'inputs': chunk_length + 1, 'targets': chunk_length + 1})]

  def make_batches(start_step):
    for objective, steps, lengths in phases:
      skip = min(start_step, steps)
      start_step -= skip
      if skip == steps:
        continue
      stream = objectives.examples(chunks, objective, seed, start=skip * batch_size)
      batches = data.batches(stream, batch_size, lengths)
      for _ in range(steps - skip):
        yield data.host_rows(next(batches))

  model = t5.T5(model_config)
  total = span_corruption_steps + lm_adaptation_steps
  run_info = {'model_config': model_config.__dict__, 'corpus': list(map(str, corpus)),
              'phases': [p[:2] for p in phases], 'seed': seed}
  state = trainer.train(
      model=model, frozen={}, method=whole_model(model),
      tx=adamw_cosine(learning_rate, total, warmup_steps), mesh=partitioning.make_mesh(num_partitions),
      make_batches=make_batches, total_steps=total, model_dir=str(model_dir), run_info=run_info,
      batch_size=batch_size, seed=seed, save_every=save_every, keep=2, log_every=50,
      enable_dropout=model_config.dropout_rate > 0, progress=progress)
  params = jax.device_get(state.params)
  return checkpoints.save_t5x(params, f'{model_dir}/t5x', int(state.step), dtype=export_dtype)


def main(argv):
  del argv
  print(pretrain())  # pylint: disable=missing-kwoa  (gin supplies the arguments)


if __name__ == '__main__':
  pretrain = gin.configurable(pretrain)  # Registered before the gin files are parsed.
  gin_setup.run(main)
