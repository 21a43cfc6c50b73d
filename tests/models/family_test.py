"""The model-family seam (models/family.py): BERT-likes and GPT-2 through the one trainer.

Small random-init models; the GPT-2 tests read real SST-2 through the real GPT-2
tokenizer files. Each family's logits under a prompt are compared with the
module called by hand, and prompt tuning / late prompt tuning train through
`trainer.Steps` (the loop T5 uses) with the loss falling.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from conftest import read_sst2, shared_path
from prompt_recycling import lpt
from prompt_recycling import partitioning
from prompt_recycling import prompts
from prompt_recycling import trainer
from prompt_recycling.models import encoder
from prompt_recycling.models import family
from prompt_recycling.models import gpt2
from prompt_recycling.models import layers

BERT = encoder.EncoderConfig(vocab_size=64, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32,
                             num_layers=2, max_positions=32)
# ALBERT: factorised embedding (8 < 16) and one layer group shared by 4 depths.
ALBERT = encoder.EncoderConfig(vocab_size=64, emb_dim=16, embedding_size=8, num_heads=2,
                               head_dim=8, mlp_dim=32, num_layers=4, num_layer_groups=1,
                               max_positions=32, activation='gelu_new', head_activation='gelu_new')
GPT2 = gpt2.GPT2Config(vocab_size=50257, emb_dim=8, num_heads=2, head_dim=4, mlp_dim=16,
                       num_layers=2, max_positions=64)
MASK, SEP = 3, 2


def _frozen(fam, seed=0):
  """Random parameters, matrices scaled from BERT's init std 0.02 to 0.4.

  At 0.02 the logits are nearly flat and a prompt barely reaches them, so no
  prompt could lower the loss; at 0.4 the model is as sensitive as a trained one.
  """
  params = jax.jit(lambda k: nn.unbox(fam.module.init(k, *fam.init_inputs()))['params'])(
      jax.random.key(seed))
  return jax.tree.map(lambda x: x * 20 if x.ndim >= 2 else x, params)


def _masked_examples(n, rng):
  """[CLS]=1 w w w [MASK] w [SEP]: the target is the id of the first word (learnable)."""
  out = []
  for _ in range(n):
    words = rng.integers(10, 20, size=4)
    out.append({'inputs': [1, *words[:3], MASK, words[3], SEP], 'targets': [int(words[0])]})
  return out


@pytest.mark.parametrize('config', [BERT, ALBERT], ids=['bert', 'albert'])
def test_masked_lm_prefix_goes_into_slots_after_cls(config):
  fam = family.MaskedLM(config, mask_id=MASK, eos_id=SEP)
  frozen = _frozen(fam)
  batch = fam.to_batch(_masked_examples(3, np.random.default_rng(0)), {'inputs': 10, 'targets': 1})
  prompt = jax.random.normal(jax.random.key(1), (3, 4, family.embed_dim(config)))
  ours = fam.logits(frozen, batch, {'prefix': prompt})
  tokens, positions = layers.insert_prompt_slots(jnp.asarray(batch['encoder_input_tokens']), 1, 4,
                                                 MASK)
  full = fam.module.apply({'params': frozen}, tokens, prompt=prompt, prompt_positions=positions)
  expected = jnp.concatenate([full[:, :1], full[:, 5:]], axis=1)
  assert ours.shape == (3, 10, config.vocab_size)
  np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6)
  # The prompt matters: without it the text rows differ.
  assert float(jnp.abs(ours - fam.logits(frozen, batch, {})).max()) > 1e-3


def test_masked_lm_batch_prompt_positions_place_the_prompt():
  """OptiPrompt's [V] slots travel in the batch; lengths do not change."""
  fam = family.MaskedLM(BERT, mask_id=MASK, eos_id=SEP)
  frozen = _frozen(fam)
  examples = [{'inputs': [1, 7, 9, 9, MASK, SEP], 'targets': [11], 'prompt_positions': [2, 3]}]
  batch = fam.to_batch(examples, {'inputs': 8, 'targets': 1})
  np.testing.assert_array_equal(batch['decoder_loss_weights'][0], [0, 0, 0, 0, 1, 0, 0, 0])
  np.testing.assert_array_equal(batch['decoder_target_tokens'][0, 4], 11)
  prompt = jax.random.normal(jax.random.key(2), (1, 2, BERT.emb_dim))
  ours = fam.logits(frozen, batch, {'prefix': prompt})
  expected = fam.module.apply({'params': frozen}, jnp.asarray(batch['encoder_input_tokens']),
                              prompt=prompt, prompt_positions=jnp.asarray(batch['prompt_positions']))
  np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6)
  predicted = fam.predict(frozen, batch, {'prefix': prompt}, 2)
  np.testing.assert_array_equal(predicted, [[int(jnp.argmax(expected[0, 4])), 0]])


def _adam_steps(fam, method, batch, n, lr=0.1):
  mesh = partitioning.make_mesh(num_partitions=1)
  steps = trainer.Steps(fam, method, optax.adam(lr), mesh, z_loss=0.0, enable_dropout=False)
  frozen = steps.put_frozen(_frozen(fam))
  state = steps.init(jax.random.key(0), frozen)
  batch = partitioning.shard_batch(batch, mesh)
  losses = []
  for _ in range(n):
    state, metrics = steps.train(state, frozen, batch, jax.random.key(1))
    losses.append(float(metrics['loss']))
  return losses, steps, state, frozen


@pytest.mark.parametrize('config', [BERT, ALBERT], ids=['bert', 'albert'])
def test_prompt_tuning_and_lpt_train_a_masked_lm(config):
  fam = family.MaskedLM(config, mask_id=MASK, eos_id=SEP)
  batch = fam.to_batch(_masked_examples(8, np.random.default_rng(3)), {'inputs': 8, 'targets': 1})
  pt = prompts.prompt_tuning(4, prompts.sampled_vocab(population=60))
  losses, steps, state, frozen = _adam_steps(fam, pt, batch, 15)
  assert state.params['prompt'].shape == (4, family.embed_dim(config))  # ALBERT: 8, not 16.
  assert losses[-1] < losses[0] - 0.1, losses
  # LPT in the middle of the (ALBERT: shared-layer) depth, the generator on the hidden width.
  method = lpt.late_prompt_tuning(3, model_config=config, generator='APPG', bottleneck=8,
                                  dropout_rate=0.0)
  assert method.encoder_args({}, 1)['hook_layer'] == config.num_layers // 2
  losses, _, state, _ = _adam_steps(fam, method, batch, 15, lr=0.01)
  assert state.params['up']['kernel'].shape == (8, config.emb_dim)
  assert losses[-1] < losses[0] - 0.05, losses


def test_lpt_depth_of_albert_counts_shared_layers():
  with pytest.raises(ValueError, match=r'outside \[0, 4\]'):
    lpt.late_prompt_tuning(1, hook_layer=5, model_config=ALBERT)
  assert family.depth(ALBERT) == 4 and ALBERT.num_param_layers == 1


@pytest.fixture(scope='module')
def gpt2_tokenizer():
  from prompt_recycling import family_tokenizers  # pylint: disable=g-import-not-at-top
  pytest.importorskip('transformers')
  return family_tokenizers.load_tokenizer(str(shared_path('tokenizers', 'gpt2')), 'gpt2')


def _sst2_examples(tokenizer, n):
  return [{'inputs': tokenizer.encode(f'Review: {text[:80]} Sentiment:'),
           'targets': tokenizer.encode(f' {label}') + [tokenizer.eos_token_id]}
          for text, label in read_sst2(n)]


def test_causal_lm_features_and_prefix(gpt2_tokenizer):
  fam = family.from_tokenizer(GPT2, gpt2_tokenizer)
  assert fam.eos_id == 50256
  examples = _sst2_examples(gpt2_tokenizer, 2)
  lengths = {'inputs': 40, 'targets': 3}
  batch = fam.to_batch(examples, lengths)
  for row, ex in enumerate(examples):
    seq = (list(ex['inputs'])[:40] + list(ex['targets']))
    n = len(seq) - 1
    np.testing.assert_array_equal(batch['decoder_input_tokens'][row, :n], seq[:-1])
    np.testing.assert_array_equal(batch['decoder_target_tokens'][row, :n], seq[1:])
    weighted = np.flatnonzero(batch['decoder_loss_weights'][row])
    # Exactly the targets are predicted, from the last input token on.
    np.testing.assert_array_equal(batch['decoder_target_tokens'][row, weighted], ex['targets'])
    assert batch['decoder_causal_attention'][row].sum() == len(ex['inputs'])
  frozen = _frozen(fam)
  prompt = jax.random.normal(jax.random.key(3), (2, 5, GPT2.emb_dim))
  ours = fam.logits(frozen, batch, {'prefix': prompt})
  tokens = jnp.asarray(batch['decoder_input_tokens'])
  slots, positions = layers.insert_prompt_slots(tokens, 0, 5, 50256)
  full = fam.module.apply({'params': frozen}, slots, prompt=prompt, prompt_positions=positions)
  for row, ex in enumerate(examples):  # Rows up to the last target (padding rows may differ).
    n = len(ex['inputs']) + len(ex['targets']) - 1
    np.testing.assert_allclose(ours[row, :n], full[row, 5:5 + n], rtol=0, atol=1e-4)


def test_causal_lm_predict_is_greedy_continuation(gpt2_tokenizer):
  fam = family.from_tokenizer(GPT2, gpt2_tokenizer)
  frozen = _frozen(fam, seed=4)
  examples = _sst2_examples(gpt2_tokenizer, 2)
  batch = fam.to_batch(examples, {'inputs': 40, 'targets': 3})
  prompt = jax.random.normal(jax.random.key(5), (2, 3, GPT2.emb_dim))
  predicted = np.asarray(jax.jit(fam.predict, static_argnums=3)(frozen, batch, {'prefix': prompt}, 3))
  apply = jax.jit(fam.module.apply)  # One program per text length, not one per op.
  for row, ex in enumerate(examples):  # Reference: the module on the growing text, one row alone.
    text = list(ex['inputs'])
    for t in range(3):
      tokens, positions = layers.insert_prompt_slots(jnp.asarray([text]), 0, 3, 50256)
      logits = apply({'params': frozen}, tokens, prompt=prompt[row:row + 1],
                     prompt_positions=positions)
      text.append(int(jnp.argmax(logits[0, -1])))
      assert predicted[row, t] == text[-1]


@pytest.mark.parametrize('generator', ['NPG', 'MPPG'])
def test_causal_lm_late_prompt_reads_inputs_only(gpt2_tokenizer, generator):
  """The generated prompt sits in front of every row, so it must not depend on the targets.

  NPG reads the last input token (where the authors' GPT-2 code reads), MPPG
  pools the inputs: flipping the label changes no row up to the last input.
  """
  fam = family.from_tokenizer(GPT2, gpt2_tokenizer)
  method = lpt.late_prompt_tuning(4, model_config=GPT2, generator=generator, bottleneck=8,
                                  dropout_rate=0.0)
  frozen = _frozen(fam)
  params = method.init(jax.random.key(1), frozen)
  examples = _sst2_examples(gpt2_tokenizer, 4)
  flipped = [dict(ex, targets=gpt2_tokenizer.encode(' positive' if 'negative' in
                                                      gpt2_tokenizer.decode(ex['targets'])
                                                      else ' negative') + [50256])
             for ex in examples]
  lengths = {'inputs': 40, 'targets': 3}
  a = fam.logits(frozen, fam.to_batch(examples, lengths), method.encoder_args(params, 4))
  b = fam.logits(frozen, fam.to_batch(flipped, lengths), method.encoder_args(params, 4))
  for row, ex in enumerate(examples):  # Rows up to the last input token see no target.
    n = len(ex['inputs'])
    np.testing.assert_allclose(a[row, :n], b[row, :n], rtol=0, atol=1e-6)


def test_causal_lm_late_prompt_and_prompt_tuning_train(gpt2_tokenizer):
  fam = family.from_tokenizer(GPT2, gpt2_tokenizer)
  method = lpt.late_prompt_tuning(4, model_config=GPT2, generator='MPPG', bottleneck=8,
                                  dropout_rate=0.0)
  lengths = {'inputs': 40, 'targets': 3}
  batch = fam.to_batch(_sst2_examples(gpt2_tokenizer, 8), lengths)
  losses, *_ = _adam_steps(fam, method, batch, 12, lr=0.01)
  assert losses[-1] < losses[0] - 0.05, losses
  pt_losses, *_ = _adam_steps(fam, prompts.prompt_tuning(4, prompts.random_uniform()), batch, 12)
  assert pt_losses[-1] < pt_losses[0] - 0.05, pt_losses


def test_odd_vocabulary_splits_over_a_model_axis():
  """GPT-2's 50,257 rows do not split over 2 devices: the table is replicated, results equal."""
  fam = family.CausalLM(GPT2)
  examples = [{'inputs': [5, 6, 7, 8], 'targets': [9, 50256]}, {'inputs': [10, 11], 'targets': [12]}]
  batch = fam.to_batch(examples, {'inputs': 6, 'targets': 3})
  method = prompts.prompt_tuning(3, prompts.random_uniform())
  results = []
  for mesh in (partitioning.make_mesh(1, devices=jax.devices()[:1]),
               partitioning.make_mesh(2, devices=jax.devices()[:2])):
    steps = trainer.Steps(fam, method, optax.adam(0.1), mesh, enable_dropout=False)
    if mesh.shape['model'] == 2:
      assert steps.frozen_shardings['token_embedder']['embedding'].spec == P(None, None)
      # What divides is still split.
      assert steps.frozen_shardings['layers_0']['mlp']['wi']['kernel'].spec[1] == 'model'
    frozen = steps.put_frozen(_frozen(fam))
    state, metrics = steps.train(steps.init(jax.random.key(0), frozen), frozen,
                                 partitioning.shard_batch(batch, mesh), jax.random.key(1))
    results.append((float(metrics['loss']), np.asarray(state.params['prompt'])))
  assert results[0][0] == pytest.approx(results[1][0], abs=1e-5)
  np.testing.assert_allclose(results[0][1], results[1][1], rtol=0, atol=1e-5)


def test_evaluation_scores_a_masked_lm_through_its_features():
  """evaluation.rank_scores builds the family's batches (padding rows included) and scores them."""
  from prompt_recycling import evaluation  # pylint: disable=g-import-not-at-top
  fam = family.MaskedLM(BERT, mask_id=MASK, eos_id=SEP)
  frozen = _frozen(fam)
  examples = [{'inputs': ex['inputs']} for ex in _masked_examples(3, np.random.default_rng(5))]
  candidates = [[[11], [12], [13]]] * 3
  steps = trainer.Steps(fam, prompts.no_prompt(), None, partitioning.make_mesh(1, jax.devices()[:1]))
  scores = evaluation.rank_scores(steps, {}, steps.put_frozen(frozen), examples, candidates,
                                  batch_size=4, feature_lengths={'inputs': 8, 'targets': 1})
  batch = fam.to_batch([dict(ex, targets=[]) for ex in examples], {'inputs': 8, 'targets': 1})
  log_probs = jax.nn.log_softmax(fam.logits(frozen, batch, {}), axis=-1)
  for row, ex in enumerate(examples):
    slot = ex['inputs'].index(MASK)
    np.testing.assert_allclose(scores[row], log_probs[row, slot, [11, 12, 13]], rtol=0, atol=1e-5)


def test_sampled_vocab_from_an_explicit_id_set():
  """BPE / WordPiece ids are not frequency-ordered: the common tokens come as an id set."""
  table = np.arange(50 * 3, dtype=np.float32).reshape(50, 3)
  ids = [7, 21, 42, 49]
  prompt = np.asarray(prompts.sampled_vocab(ids=ids)(jax.random.key(0), table, (4, 3)))
  assert sorted(int(r[0]) // 3 for r in prompt) == ids  # Without replacement: each id once.
  longer = np.asarray(prompts.sampled_vocab(ids=ids)(jax.random.key(0), table, (9, 3)))
  assert {int(r[0]) // 3 for r in longer} <= set(ids)
  with pytest.raises(ValueError, match='within the embedding table of 50 rows'):
    prompts.sampled_vocab(ids=[3, 50])(jax.random.key(0), table, (2, 3))


def test_load_model_gives_each_checkpoint_its_family(tmp_path, tiny_t5x_checkpoint, tiny_config):
  import shutil  # pylint: disable=g-import-not-at-top
  from prompt_recycling import family_checkpoints  # pylint: disable=g-import-not-at-top
  transformers = pytest.importorskip('transformers')
  params, fam = family_checkpoints.load_model(str(tiny_t5x_checkpoint))
  assert fam == family.EncoderDecoder(tiny_config) and 'encoder' in params
  transformers.GPT2LMHeadModel(transformers.GPT2Config(
      vocab_size=300, n_embd=8, n_layer=1, n_head=2, n_positions=16)).save_pretrained(tmp_path / 'g')
  params, fam = family_checkpoints.load_model(str(tmp_path / 'g'))
  assert isinstance(fam, family.CausalLM) and fam.eos_id == 50256  # config.json's eos_token_id.
  assert family.embeddings(params).shape == (300, 8)
  transformers.RobertaForMaskedLM(transformers.RobertaConfig(
      vocab_size=50265, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
      intermediate_size=16, max_position_embeddings=20)).save_pretrained(tmp_path / 'r')
  for name in ('vocab.json', 'merges.txt'):  # The real tokenizer beside the weights.
    shutil.copy(shared_path('tokenizers', 'roberta-base', name), tmp_path / 'r' / name)
  params, fam = family_checkpoints.load_model(str(tmp_path / 'r'))
  assert (fam.mask_id, fam.eos_id, fam.pad_id) == (50264, 2, 1)
  assert family.depth(fam.config) == 1 and family.embed_dim(fam.config) == 8
