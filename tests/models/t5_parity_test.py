"""`models/t5.py` against Hugging Face's PyTorch T5, and the model's own invariants.

The reference is `transformers.T5ForConditionalGeneration` (float32, CPU) with
random weights, written to disk by `save_pretrained` and read back through
`checkpoints.load_params`, so the parity covers the name and layout mapping as
well as the maths. Random-init HF T5 tends to predict one token everywhere;
the weights are spread out first (larger embedding and output scales, random
layer norms and relative position tables) and the reference output is checked
to vary before anything is compared with it.

The model tests use a small random T5 1.1: gradient checkpointing and bf16
change nothing but memory and precision, the encoder's `prefix` and `hook`
behave as documented, every parameter has logical axes, and a forward pass on
an 8-device (data 4 x model 2) mesh equals the single-device one.
"""
import dataclasses
import functools

import flax.linen as nn
import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_recycling import checkpoints
from prompt_recycling import partitioning
from prompt_recycling.models import decoding
from prompt_recycling.models import t5

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')
# Torch's intra-op pool spins against JAX's on a small shared CPU: tiny matmuls
# then take milliseconds each and HF generate seconds. One thread is plenty.
torch.set_num_threads(1)

VOCAB = 96
# Both variants: sizes of the HF reference, with asymmetric stacks (2 encoder,
# 3 decoder layers) so the two layer counts cannot be confused.
HF_VARIANTS = {
    # T5 1.1: gated GELU, separate unscaled output layer.
    't5_1_1': dict(feed_forward_proj='gated-gelu', tie_word_embeddings=False),
    # Original T5: ReLU, output layer tied to the embedding, scaled by d_model**-0.5.
    't5': dict(feed_forward_proj='relu', tie_word_embeddings=True),
    # A scaled decoder output with a separate lm_head (transformers 5 can write it): the
    # loader folds the scale into the output kernel.
    'scaled_separate_lm_head': dict(feed_forward_proj='gated-relu', tie_word_embeddings=True),
}


def _hf_model(variant: str, seed: int = 0):
  """A random, non-degenerate HF T5 of `variant` (eval mode, float32)."""
  torch.manual_seed(seed)
  cfg = transformers.T5Config(
      vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=3,
      num_heads=4, relative_attention_num_buckets=16, relative_attention_max_distance=24,
      dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
      **HF_VARIANTS[variant])
  model = transformers.T5ForConditionalGeneration(cfg).eval()
  with torch.no_grad():
    model.shared.weight.normal_(0.0, 2.0)
    if variant != 't5':
      # Transformers 5 ties lm_head at construction; a new parameter unties it
      # and save_pretrained then writes both tensors.
      model.lm_head.weight = torch.nn.Parameter(torch.randn(VOCAB, 32) * 3.0)
    for name, param in model.named_parameters():
      if 'layer_norm' in name:
        # Signed scales: with the default (all ones) a tied model's output
        # lines up with its input embedding and it repeats one token.
        param.uniform_(0.5, 1.5).mul_(torch.randint(0, 2, param.shape) * 2.0 - 1.0)
      elif 'relative_attention_bias' in name:
        param.normal_(0.0, 1.0)
      elif name.endswith(('.o.weight', '.wo.weight')):
        param.mul_(4.0)  # Layers outweigh the embedding in the residual stream.
  assert (model.lm_head.weight.data_ptr() == model.shared.weight.data_ptr()) == (variant == 't5')
  return model


@pytest.fixture(scope='module', params=sorted(HF_VARIANTS), ids=sorted(HF_VARIANTS))
def hf_checkpoint(request, tmp_path_factory):
  """(variant, HF model, directory written by save_pretrained as safetensors)."""
  model = _hf_model(request.param)
  directory = tmp_path_factory.mktemp(f'hf_{request.param}')
  model.save_pretrained(directory)
  assert (directory / 'model.safetensors').is_file()
  return request.param, model, directory


def _padded_batch(seed: int = 0):
  """Encoder tokens [3, 40] with ragged right padding; decoder tokens [3, 17] starting at 0."""
  rng = np.random.RandomState(seed)
  enc = rng.randint(2, VOCAB, size=(3, 40)).astype(np.int32)
  enc[1, 29:] = 0
  enc[2, 7:] = 0
  dec = rng.randint(2, VOCAB, size=(3, 17)).astype(np.int32)
  dec[:, 0] = 0  # T5's decoder start token.
  return enc, dec


def _hf_logits(model, enc, dec):
  with torch.no_grad():
    out = model(input_ids=torch.from_numpy(enc).long(),
                attention_mask=torch.from_numpy(enc > 0).long(),
                decoder_input_ids=torch.from_numpy(dec).long())
  return out.logits.numpy()


def _flat(tree):
  """{'a': {'b': x}} -> {'a/b': x}."""
  return flax.traverse_util.flatten_dict(tree, sep='/')


# --- Parity with Hugging Face -------------------------------------------------

def test_logits_match_hf(hf_checkpoint):
  variant, model, directory = hf_checkpoint
  params, config = checkpoints.load_params(str(directory))
  assert config.num_encoder_layers == 2 and config.num_decoder_layers == 3
  assert config.relative_attention_num_buckets == 16
  assert config.relative_attention_max_distance == 24
  assert config.logits_via_embedding == (variant == 't5')
  assert config.mlp_activations == {'t5_1_1': ('gelu', 'linear'), 't5': ('relu',),
                                    'scaled_separate_lm_head': ('relu', 'linear')}[variant]

  enc, dec = _padded_batch()
  expected = _hf_logits(model, enc, dec)
  ours = np.asarray(jax.jit(t5.T5(config).apply)({'params': params}, enc, dec))
  assert ours.shape == expected.shape == (3, 17, VOCAB)
  # Logits of several units: 1e-4 is a real constraint, not a lucky scale.
  assert np.abs(expected).max() > 5.0
  np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-4)


def test_pytorch_bin_loads_as_safetensors(hf_checkpoint, tmp_path):
  """A legacy `pytorch_model.bin` + config.json gives the same tree bit for bit.

  Transformers 5 dropped `save_pretrained(safe_serialization=False)`, so the
  .bin is written as older versions did: `torch.save` of the state dict (which
  keeps the tied embedding and lm_head as one shared storage).
  """
  _, model, directory = hf_checkpoint
  model.config.save_pretrained(tmp_path)
  torch.save(model.state_dict(), tmp_path / 'pytorch_model.bin')
  from_bin, config_bin = checkpoints.load_params(str(tmp_path))
  from_st, config_st = checkpoints.load_params(str(directory))
  assert config_bin == config_st
  flat_bin, flat_st = _flat(from_bin), _flat(from_st)
  assert sorted(flat_bin) == sorted(flat_st)
  for name, value in flat_st.items():
    assert flat_bin[name].dtype == value.dtype == np.float32, name
    np.testing.assert_array_equal(flat_bin[name], value, err_msg=name)


def _hf_generate(model, enc, steps: int, eos_id: int) -> np.ndarray:
  """HF greedy search: [batch, steps] int32 without the start token, 0-padded after EOS."""
  with torch.no_grad():
    # use_cache=False: transformers' cache crashes with unequal stack depths.
    generated = model.generate(
        input_ids=torch.from_numpy(enc).long(), attention_mask=torch.from_numpy(enc > 0).long(),
        max_new_tokens=steps, do_sample=False, num_beams=1, use_cache=False,
        eos_token_id=eos_id).numpy()
  tokens = np.zeros((enc.shape[0], steps), np.int32)
  tokens[:, :generated.shape[1] - 1] = generated[:, 1:]  # Stops early once every row ended.
  return tokens


def test_greedy_decoding_matches_hf_generate(hf_checkpoint):
  variant, model, directory = hf_checkpoint
  params, config = checkpoints.load_params(str(directory))
  enc, _ = _padded_batch(seed=1)
  steps = 10
  free = _hf_generate(model, enc, steps, eos_id=1)
  # A degenerate reference (one token everywhere) would prove little.
  assert len(np.unique(free)) >= 4, (variant, free)
  assert len({tuple(row) for row in free}) == enc.shape[0], (variant, free)
  # Random weights rarely emit EOS (1), so call a token that row 0 emits first
  # at step >= 2 the EOS: then the stop and the padding after it are checked too.
  stop = next(i for i in range(2, steps - 1) if free[0, i] not in free[0, :i])
  eos = int(free[0, stop])
  expected = _hf_generate(model, enc, steps, eos_id=eos)
  assert expected[0, stop] == eos and not expected[0, stop + 1:].any()

  decode_fn = jax.jit(functools.partial(decoding.greedy_decode, t5.T5(config),
                                        max_decode_length=steps, eos_id=eos))
  ours = np.asarray(decode_fn({'params': params}, jnp.asarray(enc)))
  np.testing.assert_array_equal(ours, expected)


@pytest.mark.parametrize('num_buckets,max_distance', [(32, 128), (16, 24), (4, 128), (8, 10)],
                         ids=['t5_default', 'b16_d24', 'tiny_b4', 'b8_d10'])
@pytest.mark.parametrize('bidirectional', [True, False], ids=['encoder', 'causal'])
def test_relative_position_bucket_matches_hf(bidirectional, num_buckets, max_distance):
  offsets = np.arange(-600, 601, dtype=np.int32)
  expected = transformers.models.t5.modeling_t5.T5Attention._relative_position_bucket(
      torch.from_numpy(offsets).long(), bidirectional=bidirectional, num_buckets=num_buckets,
      max_distance=max_distance).numpy()
  ours = np.asarray(t5.relative_position_bucket(jnp.asarray(offsets), bidirectional,
                                                num_buckets, max_distance))
  np.testing.assert_array_equal(ours, expected)
  # Every bucket is reached over this range (bidirectional: all but the
  # positive side's offset-0 bucket), so the comparison covers every edge.
  assert len(set(ours.tolist())) == num_buckets - bidirectional


# --- The model's own invariants -----------------------------------------------

SMALL = t5.T5Config(vocab_size=64, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=24,
                    num_encoder_layers=3, num_decoder_layers=1,
                    relative_attention_num_buckets=8, relative_attention_max_distance=16)


@functools.lru_cache(maxsize=None)
def _small_params():
  """Random parameters of `SMALL`, shaped by `init` but filled by numpy (no compile)."""
  tokens = jax.ShapeDtypeStruct((1, 4), jnp.int32)
  shapes = nn.unbox(jax.eval_shape(t5.T5(SMALL).init, jax.random.key(0), tokens, tokens))
  rng = np.random.RandomState(0)

  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    if 'scale' in name:  # Layer norms: around one, not all equal.
      return jnp.asarray(rng.uniform(0.5, 1.5, leaf.shape), jnp.float32)
    fan_in = 1.0 if 'embedding' in name else leaf.shape[0]
    return jnp.asarray(rng.normal(0.0, fan_in ** -0.5, leaf.shape), jnp.float32)

  return jax.tree_util.tree_map_with_path(fill, shapes['params'])


@functools.lru_cache(maxsize=None)
def _apply_fn(config: t5.T5Config):
  """`T5(config).apply`, jitted once per config (hooks and method static)."""
  return jax.jit(t5.T5(config).apply,
                 static_argnames=('hook', 'hook_layer', 'method', 'capture_intermediates'))


def _small_batch(batch: int = 4, seed: int = 0):
  rng = np.random.RandomState(seed)
  enc = rng.randint(2, SMALL.vocab_size, size=(batch, 12)).astype(np.int32)
  enc[1, 8:] = 0
  enc[-1, 3:] = 0
  dec = rng.randint(2, SMALL.vocab_size, size=(batch, 6)).astype(np.int32)
  dec[:, 0] = 0
  return jnp.asarray(enc), jnp.asarray(dec)


def _encode_and_logits(module: t5.T5, enc, dec, prefix=None, hook=None, hook_layer=None):
  """One pass giving (encoded [batch, l, embed], mask [batch, l], logits [batch, t, vocab])."""
  encoded, mask = module.encode(enc, prefix, hook, hook_layer)
  return encoded, mask, module.decode(encoded, mask, dec)


def _with(**changes) -> t5.T5Config:
  return dataclasses.replace(SMALL, **changes)


@functools.lru_cache(maxsize=None)
def _prompt_logits_and_grad(config: t5.T5Config):
  """Logits and the gradient of a loss w.r.t. a prompt prefix [batch, 3, embed].

  Dropout is on (with a fixed key), as in prompt tuning: recomputed layers must
  draw the same masks as the first pass.
  """
  params = _small_params()
  enc, dec = _small_batch()
  prompt = jax.random.normal(jax.random.key(1), (enc.shape[0], 3, SMALL.emb_dim))
  model = t5.T5(config)

  def loss_fn(prompt):
    # An 'rbg' key: threefry's dropout masks would triple the compile time.
    logits = model.apply({'params': params}, enc, dec, prefix=prompt, enable_dropout=True,
                         rngs={'dropout': jax.random.key(2, impl='rbg')})
    return jnp.mean(jax.nn.log_softmax(logits)[..., 5]), logits

  (_, logits), grad = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(prompt)
  return np.asarray(logits), np.asarray(grad)


@pytest.mark.parametrize('policy', ['full', 'minimal'])
def test_remat_changes_nothing_but_memory(policy):
  logits, grad = _prompt_logits_and_grad(_with(dropout_rate=0.2))
  remat_logits, remat_grad = _prompt_logits_and_grad(_with(dropout_rate=0.2, remat_policy=policy))
  assert np.abs(grad).max() > 1e-4  # The prompt really is differentiated.
  np.testing.assert_allclose(remat_logits, logits, rtol=0, atol=1e-5)
  np.testing.assert_allclose(remat_grad, grad, rtol=1e-4, atol=1e-7)


def test_unknown_remat_policy_is_refused():
  with pytest.raises(ValueError, match="remat_policy must be 'none', 'full' or 'minimal'"):
    t5.T5Config(remat_policy='dots')


def test_bfloat16_runs_in_bfloat16_and_is_close_to_float32():
  variables = {'params': _small_params()}
  enc, dec = _small_batch()
  encoded, _, low = _apply_fn(_with(dtype='bfloat16'))(variables, enc, dec,
                                                      method=_encode_and_logits)
  _, _, high = _apply_fn(SMALL)(variables, enc, dec, method=_encode_and_logits)
  assert encoded.dtype == jnp.bfloat16
  assert low.dtype == high.dtype == jnp.float32  # Logits come back in float32 either way.
  low, high = np.asarray(low), np.asarray(high)
  assert np.isfinite(low).all()
  assert not np.array_equal(low, high)  # bf16 really computed something else.
  # bf16 keeps 8 bits of mantissa; rounding the weights alone moves these
  # logits by ~1% on average.
  assert np.abs(low - high).mean() < 0.05 * np.abs(high).mean()
  assert np.abs(low - high).max() < 0.15 * np.abs(high).max()
  assert np.mean(low.argmax(-1) == high.argmax(-1)) > 0.9


def test_prefix_equals_prepended_token_embeddings():
  """A prefix of embedding rows is the same as prepending those tokens.

  Both give the prefix positions 0..p-1 and a mask of ones over them, so the
  encodings, masks and logits coincide.
  """
  variables = {'params': _small_params()}
  enc, dec = _small_batch()
  prompt_tokens = jnp.asarray([[5, 17, 33], [9, 9, 2], [60, 3, 41], [7, 8, 6]], jnp.int32)
  prefix = variables['params']['token_embedder']['embedding'][prompt_tokens]  # [batch, 3, embed]
  apply = _apply_fn(SMALL)
  with_prefix = apply(variables, enc, dec, prefix, method=_encode_and_logits)
  joined = apply(variables, jnp.concatenate([prompt_tokens, enc], axis=1), dec,
                 method=_encode_and_logits)
  assert with_prefix[0].shape == (4, 3 + enc.shape[1], SMALL.emb_dim)
  np.testing.assert_array_equal(with_prefix[1], joined[1])
  assert not with_prefix[1][-1, 3 + 3:].any()  # The input's padding stays masked.
  np.testing.assert_allclose(with_prefix[0], joined[0], rtol=0, atol=1e-5)
  np.testing.assert_allclose(with_prefix[2], joined[2], rtol=0, atol=1e-5)


def _identity(hidden, mask):
  return hidden, mask


@pytest.mark.parametrize('hook_layer', range(SMALL.num_encoder_layers + 1))
def test_identity_hook_changes_nothing(hook_layer):
  variables = {'params': _small_params()}
  enc, _ = _small_batch()
  apply = _apply_fn(SMALL)
  hooked = apply(variables, enc, hook=_identity, hook_layer=hook_layer, method=t5.T5.encode)
  plain = apply(variables, enc, method=t5.T5.encode)
  for a, b in zip(hooked, plain):  # Encodings and masks; the decoder only sees these.
    np.testing.assert_array_equal(a, b)


def _insert_two_rows(hidden, mask):
  """A hook that prepends two fixed rows (as a late prompt does)."""
  rows = jnp.broadcast_to(jnp.linspace(-1.0, 1.0, 2 * hidden.shape[-1]).reshape(2, -1),
                          (hidden.shape[0], 2, hidden.shape[-1]))
  return (jnp.concatenate([rows.astype(hidden.dtype), hidden], axis=1),
          jnp.concatenate([jnp.ones(rows.shape[:2], bool), mask], axis=1))


@pytest.mark.parametrize('hook_layer', [1, 2])
def test_hook_inserting_rows_leaves_lower_layers_unchanged(hook_layer):
  variables = {'params': _small_params()}
  enc, _ = _small_batch()
  apply = _apply_fn(SMALL)

  def layer_outputs(**hooks):
    (encoded, mask), state = apply(variables, enc, **hooks, method=t5.T5.encode,
                                   capture_intermediates=True)
    inter = state['intermediates']['encoder']
    return encoded, mask, [np.asarray(inter[f'layers_{i}']['__call__'][0])
                           for i in range(SMALL.num_encoder_layers)]

  _, _, plain = layer_outputs()
  encoded, mask, hooked = layer_outputs(hook=_insert_two_rows, hook_layer=hook_layer)
  assert encoded.shape[1] == mask.shape[1] == enc.shape[1] + 2
  assert mask[:, :2].all()
  for i in range(hook_layer):  # (Separately compiled programs: allow rounding.)
    np.testing.assert_allclose(hooked[i], plain[i], rtol=0, atol=1e-6, err_msg=f'layers_{i}')
  for i in range(hook_layer, SMALL.num_encoder_layers):
    assert hooked[i].shape[1] == enc.shape[1] + 2
    # The original positions now attend to the inserted rows, so they change.
    assert np.abs(hooked[i][:, 2:] - plain[i]).max() > 1e-2, f'layers_{i}'


def test_greedy_decoding_with_prefix_and_hook_is_teacher_forced_argmax():
  """The KV-cached decoder sees the prompt as the full model does.

  Feeding the decoded tokens back teacher-forced (one full pass, no cache)
  must predict each of them, up to and including the EOS; padding follows it.
  """
  variables = {'params': _small_params()}
  enc, _ = _small_batch()
  prefix = jax.random.normal(jax.random.key(5), (enc.shape[0], 3, SMALL.emb_dim))
  hooks = dict(hook=_insert_two_rows, hook_layer=1)
  decode_fn = jax.jit(functools.partial(decoding.greedy_decode, t5.T5(SMALL), max_decode_length=8,
                                        **hooks))
  tokens = np.asarray(decode_fn(variables, enc, prefix=prefix))
  inputs = np.concatenate([np.zeros_like(tokens[:, :1]), tokens[:, :-1]], axis=1)
  logits = _apply_fn(SMALL)(variables, enc, jnp.asarray(inputs), prefix, **hooks)
  predicted = np.asarray(logits).argmax(-1)
  ended = np.cumsum(tokens == 1, axis=1) - (tokens == 1) > 0  # Strictly after the EOS.
  assert (~ended).sum() > 10 and len(np.unique(tokens[~ended])) > 3
  np.testing.assert_array_equal(np.where(ended, 0, predicted), tokens)


@pytest.mark.parametrize('hook_layer', [-1, SMALL.num_encoder_layers + 1, None],
                         ids=['negative', 'past_the_end', 'missing'])
def test_out_of_range_hook_layer_is_refused(hook_layer):
  variables = {'params': _small_params()}
  enc, _ = _small_batch()
  with pytest.raises(ValueError, match=r'hook_layer must be in \[0, 3\] for a 3-layer encoder'):
    t5.T5(SMALL).apply(variables, enc, hook=_identity, hook_layer=hook_layer, method=t5.T5.encode)


@pytest.mark.parametrize(
    'config', [SMALL, _with(mlp_activations=('relu',), logits_via_embedding=True)],
    ids=['t5_1_1', 't5'])
def test_every_param_has_logical_axes(config):
  tokens = jnp.ones((1, 4), jnp.int32)
  variables = jax.eval_shape(t5.T5(config).init, jax.random.key(0), tokens, tokens)
  specs = _flat(nn.get_partition_spec(variables)['params'])
  shapes = _flat(nn.unbox(variables)['params'])
  assert sorted(specs) == sorted(shapes)
  known = {name for name, _ in partitioning.LOGICAL_AXIS_RULES}
  for path, spec in specs.items():
    assert len(spec) == len(shapes[path].shape), (path, spec)  # Unannotated: P().
    assert set(spec) <= known, (path, spec)
  assert specs['token_embedder/embedding'] == jax.sharding.PartitionSpec('vocab', 'embed')
  assert specs['encoder/relpos_bias/rel_embedding'] == jax.sharding.PartitionSpec(
      'heads', 'relpos_buckets')


def test_sharded_forward_equals_one_device():
  assert jax.device_count() == 8, 'conftest forces 8 host devices'
  mesh = partitioning.make_mesh(num_partitions=2)
  assert dict(mesh.shape) == {'data': 4, 'model': 2}
  model = t5.T5(SMALL)
  enc, dec = _small_batch(batch=8, seed=3)
  tokens = jnp.ones((1, 4), jnp.int32)
  _, shardings = partitioning.params_shardings(model.init, jax.random.key(0), tokens, tokens,
                                               mesh=mesh)
  params = _small_params()
  sharded_params = jax.device_put({'params': params}, shardings)
  embedding = sharded_params['params']['token_embedder']['embedding']
  assert embedding.sharding.spec == jax.sharding.PartitionSpec('model', None)
  assert embedding.addressable_shards[0].data.shape == (SMALL.vocab_size // 2, SMALL.emb_dim)

  batch = partitioning.batch_sharding(mesh)
  with partitioning.axis_rules(mesh):
    sharded = jax.jit(model.apply, in_shardings=(shardings, batch, batch))(
        sharded_params, jax.device_put(enc, batch), jax.device_put(dec, batch))
  assert not sharded.sharding.is_fully_replicated  # Rows really live on different devices.
  single = jax.jit(model.apply)({'params': params}, enc, dec)
  np.testing.assert_allclose(np.asarray(sharded), np.asarray(single), rtol=0, atol=1e-5)
