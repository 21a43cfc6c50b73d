"""`models/encoder.py` and `models/gpt2.py` against transformers' PyTorch models.

References: `BertForMaskedLM`, `RobertaForMaskedLM`, `AlbertForMaskedLM` (one
shared layer group, and two groups over four layers) and `GPT2LMHeadModel`,
float32 on CPU, random weights from tiny configs (no download), written by
`save_pretrained` and read back through `family_checkpoints.load_hf`, so the
name and layout mapping is covered with the maths. HF's initialisation
(std 0.02, unit layer norms) gives near-constant logits; the weights are
spread out first and the reference is checked to vary before comparing.

Checked: logits on a right-padded batch (with token types for BERT/ALBERT),
logits with a soft prompt written at per-row slots (HF fed `inputs_embeds`),
the hook's view of the hidden states against HF's `hidden_states`, the legacy
pytorch_model.bin layout, and the loader's refusals.
"""
import json

import flax.linen as nn
import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_recycling import checkpoints
from prompt_recycling import family_checkpoints
from prompt_recycling import partitioning
from prompt_recycling.models import encoder
from prompt_recycling.models import gpt2
from prompt_recycling.models import layers

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')
torch.set_num_threads(1)  # See t5_parity_test: one torch thread beside JAX on a small CPU.

VOCAB = 64
LENGTH = 9
_SIZES = dict(vocab_size=VOCAB, hidden_size=16, num_attention_heads=2, intermediate_size=24,
              max_position_embeddings=24, hidden_dropout_prob=0.0,
              attention_probs_dropout_prob=0.0)
VARIANTS = {
    'bert': lambda: transformers.BertForMaskedLM(transformers.BertConfig(
        num_hidden_layers=2, layer_norm_eps=1e-12, **_SIZES)),
    'roberta': lambda: transformers.RobertaForMaskedLM(transformers.RobertaConfig(
        num_hidden_layers=2, layer_norm_eps=1e-5, type_vocab_size=1, pad_token_id=1,
        **_SIZES)),
    'albert': lambda: transformers.AlbertForMaskedLM(transformers.AlbertConfig(
        embedding_size=8, num_hidden_layers=3, num_hidden_groups=1, **_SIZES)),
    'albert_groups': lambda: transformers.AlbertForMaskedLM(transformers.AlbertConfig(
        embedding_size=8, num_hidden_layers=4, num_hidden_groups=2, **_SIZES)),
    'gpt2': lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=16, n_head=2, n_layer=2, n_positions=24, n_inner=24,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)),
}


def _hf_model(variant: str, seed: int = 0):
  """A random, non-degenerate HF model of `variant` (eval mode, float32)."""
  torch.manual_seed(seed)
  model = VARIANTS[variant]().eval()
  with torch.no_grad():
    for name, param in model.named_parameters():
      if 'norm' in name.lower() or name.endswith(('ln_1.weight', 'ln_2.weight', 'ln_f.weight')):
        param.uniform_(0.5, 1.5) if name.endswith(('weight', 'gamma')) else param.normal_(0, 0.3)
      else:
        param.normal_(0.0, 0.5)
  return model


@pytest.fixture(scope='module', params=sorted(VARIANTS), ids=sorted(VARIANTS))
def hf_checkpoint(request, tmp_path_factory):
  """(variant, HF model, directory written by save_pretrained as safetensors)."""
  model = _hf_model(request.param)
  directory = tmp_path_factory.mktemp(f'hf_{request.param}')
  model.save_pretrained(directory)
  assert (directory / 'model.safetensors').is_file()
  return request.param, model, directory


def _pad_id(model) -> int:
  return model.config.pad_token_id if model.config.model_type != 'gpt2' else 0


def _batch(model, seed: int = 0, pad: bool = True):
  """tokens [3, LENGTH] (row 1 right-padded when `pad`), mask, token types or None."""
  rng = np.random.RandomState(seed)
  tokens = rng.randint(3, VOCAB, size=(3, LENGTH)).astype(np.int32)
  mask = np.ones_like(tokens, bool)
  if pad:
    tokens[1, 5:] = _pad_id(model)
    mask[1, 5:] = False
  types = None
  if getattr(model.config, 'type_vocab_size', 1) > 1:
    types = (rng.rand(3, LENGTH) > 0.5).astype(np.int32)
  return tokens, mask, types


def _hf_forward(model, tokens=None, mask=None, types=None, inputs_embeds=None, **kwargs):
  t = lambda x: None if x is None else torch.from_numpy(np.asarray(x)).long()
  with torch.no_grad():
    return model(input_ids=t(tokens), attention_mask=t(mask), token_type_ids=t(types),
                 inputs_embeds=None if inputs_embeds is None else torch.from_numpy(inputs_embeds),
                 **kwargs)


def _ours(config, params, tokens, mask, types, **kwargs):
  model = family_checkpoints.module(config)
  extra = {'mask': mask} if isinstance(config, gpt2.GPT2Config) else {'token_types': types}
  return np.asarray(model.apply({'params': params}, jnp.asarray(tokens), **extra, **kwargs))


def test_logits_match_hf(hf_checkpoint):
  variant, model, directory = hf_checkpoint
  params, config = family_checkpoints.load_hf(str(directory))
  expected_type = gpt2.GPT2Config if variant == 'gpt2' else encoder.EncoderConfig
  assert isinstance(config, expected_type)
  if variant.startswith('albert'):
    assert config.embedding_size == 8 and config.num_layer_groups == model.config.num_hidden_groups
    assert sum(k.startswith('layers_') for k in params) == model.config.num_hidden_groups
  if variant != 'gpt2':
    assert config.positions_from_padding == (variant == 'roberta')

  tokens, mask, types = _batch(model)
  expected = _hf_forward(model, tokens, mask, types).logits.numpy()
  ours = _ours(config, params, tokens, mask, types)
  assert ours.shape == expected.shape == (3, LENGTH, VOCAB)
  # Logits vary by units across positions: a 1e-4 match is no accident of scale.
  assert np.abs(expected).max() > 1.0 and expected[mask].std(axis=0).mean() > 0.1
  # Padded rows are compared only where the token is real.
  np.testing.assert_allclose(ours[mask], expected[mask], rtol=0, atol=1e-4)


def _prompted(model, config, params, tokens, seed: int = 1):
  """(prompt [3, 4, width], per-row slots [3, 4], HF inputs_embeds with the prompt written in)."""
  rng = np.random.RandomState(seed)
  width = config.token_embed_dim
  prompt = rng.normal(0, 1.0, size=(3, 4, width)).astype(np.float32)
  starts = np.array([0, 1, 5])  # Different start per row: the OptiPrompt template's case.
  slots = (starts[:, None] + np.arange(4)[None]).astype(np.int32)
  embeds = np.asarray(params['token_embedder']['embedding'])[tokens].copy()
  embeds[np.arange(3)[:, None], slots] = prompt
  return prompt, slots, embeds


def test_prompt_matches_hf_inputs_embeds(hf_checkpoint):
  variant, model, directory = hf_checkpoint
  params, config = family_checkpoints.load_hf(str(directory))
  # No padding: HF derives RoBERTa's positions from inputs_embeds as if none.
  tokens, mask, types = _batch(model, seed=2, pad=False)
  prompt, slots, embeds = _prompted(model, config, params, tokens)
  expected = _hf_forward(model, None, mask, types, inputs_embeds=embeds).logits.numpy()
  ours = _ours(config, params, tokens, mask, types, prompt=jnp.asarray(prompt),
               prompt_positions=jnp.asarray(slots))
  without = _ours(config, params, tokens, mask, types)
  assert np.abs(ours - without).max() > 1.0  # The prompt matters.
  np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-4)


def test_hook_sees_hf_hidden_states(hf_checkpoint):
  """The hook before layer k sees HF's hidden_states[k] (after k layers), for every k; a no-op
  hook changes nothing."""
  variant, model, directory = hf_checkpoint
  params, config = family_checkpoints.load_hf(str(directory))
  tokens, mask, types = _batch(model, seed=3)
  reference = _hf_forward(model, tokens, mask, types, output_hidden_states=True)
  module = family_checkpoints.module(config)
  extra = {'mask': mask} if variant == 'gpt2' else {'token_types': types}
  for k in range(config.num_layers + 1):
    seen = []

    def capture(hidden, hidden_mask):
      seen.append((hidden, hidden_mask))  # pylint: disable=cell-var-from-loop
      return hidden, hidden_mask

    logits = module.apply({'params': params}, jnp.asarray(tokens), **extra, hook=capture,
                          hook_layer=k)
    (hidden, hidden_mask), = seen
    np.testing.assert_array_equal(np.asarray(hidden_mask), mask)
    if variant == 'gpt2' and k == config.num_layers:
      # HF's last GPT-2 hidden state is after ln_f; the hook runs before it.
      with torch.no_grad():
        hidden = model.transformer.ln_f(torch.from_numpy(np.asarray(hidden))).numpy()
    np.testing.assert_allclose(np.asarray(hidden)[mask], reference.hidden_states[k].numpy()[mask],
                               rtol=0, atol=1e-4, err_msg=f'k={k}')
    np.testing.assert_allclose(np.asarray(logits)[mask], reference.logits.numpy()[mask],
                               rtol=0, atol=1e-4, err_msg=f'k={k}')


def test_hook_inserting_vectors_extends_the_sequence(hf_checkpoint):
  """A late prompt put in front before layer 1 is attended to by the text and lengthens the output."""
  variant, model, directory = hf_checkpoint
  params, config = family_checkpoints.load_hf(str(directory))
  tokens, mask, types = _batch(model, seed=4)
  late = jnp.asarray(np.random.RandomState(0).normal(0, 1, (3, 2, config.emb_dim)), jnp.float32)

  def insert(hidden, hidden_mask):
    return (jnp.concatenate([late, hidden], 1),
            jnp.concatenate([jnp.ones((3, 2), bool), hidden_mask], 1))

  base = _ours(config, params, tokens, mask, types)
  ours = _ours(config, params, tokens, mask, types, hook=insert, hook_layer=1)
  assert ours.shape == (3, 2 + LENGTH, VOCAB)
  assert np.abs(ours[:, 2:][mask] - base[mask]).max() > 0.1


def test_pytorch_bin_loads_as_safetensors(hf_checkpoint, tmp_path):
  """A legacy `pytorch_model.bin` (torch.save of the state dict, tied head included) gives the same tree."""
  _, model, directory = hf_checkpoint
  model.config.save_pretrained(tmp_path)
  torch.save(model.state_dict(), tmp_path / 'pytorch_model.bin')
  from_bin, config_bin = family_checkpoints.load_hf(str(tmp_path))
  from_st, config_st = family_checkpoints.load_hf(str(directory))
  assert config_bin == config_st
  flat_bin = flax.traverse_util.flatten_dict(from_bin, sep='/')
  flat_st = flax.traverse_util.flatten_dict(from_st, sep='/')
  assert sorted(flat_bin) == sorted(flat_st)
  for name, value in flat_st.items():
    np.testing.assert_array_equal(flat_bin[name], value, err_msg=name)


def test_only_reads_the_embedding(hf_checkpoint):
  variant, model, directory = hf_checkpoint
  params, config = family_checkpoints.load_hf(str(directory), only=['token_embedder/embedding'])
  assert list(params) == ['token_embedder']
  expected = model.get_input_embeddings().weight.detach().numpy()
  np.testing.assert_array_equal(params['token_embedder']['embedding'], expected)
  assert params['token_embedder']['embedding'].shape == (VOCAB, config.token_embed_dim)


# --- Refusals -----------------------------------------------------------------

def _saved(tmp_path, variant='bert'):
  model = _hf_model(variant)
  model.save_pretrained(tmp_path)
  return model, json.loads((tmp_path / 'config.json').read_text())


def test_refuses_untied_decoder(tmp_path):
  model, _ = _saved(tmp_path)
  state = {k: v.clone() for k, v in model.state_dict().items()}
  state['cls.predictions.decoder.weight'] = torch.randn(VOCAB, 16)
  torch.save(state, tmp_path / 'pytorch_model.bin')
  (tmp_path / 'model.safetensors').unlink()
  with pytest.raises(checkpoints.CheckpointError, match='differs from the token embedding'):
    family_checkpoints.load_hf(str(tmp_path))


def test_refuses_relative_positions_and_unknown_families(tmp_path):
  _, config = _saved(tmp_path)
  with pytest.raises(checkpoints.CheckpointError, match='position_embedding_type'):
    family_checkpoints.config_from_hf({**config, 'position_embedding_type': 'relative_key'})
  with pytest.raises(checkpoints.CheckpointError, match="model_type 't5'"):
    family_checkpoints.config_from_hf({**config, 'model_type': 't5'})


def test_shape_mismatch_names_tensor_and_shapes(tmp_path):
  _, config = _saved(tmp_path)
  (tmp_path / 'config.json').write_text(json.dumps({**config, 'intermediate_size': 20}))
  with pytest.raises(checkpoints.CheckpointError,
                     match=r'intermediate\.dense\.bias gives .*\(24,\).*\(20,\)'):
    family_checkpoints.load_hf(str(tmp_path))


def test_missing_head_is_named(tmp_path):
  model = transformers.BertModel(transformers.BertConfig(num_hidden_layers=1, **_SIZES))
  model.save_pretrained(tmp_path)
  with pytest.raises(checkpoints.CheckpointError, match='cls.predictions'):
    family_checkpoints.load_hf(str(tmp_path))


def test_inputs_beyond_the_position_table_are_refused():
  cfg = encoder.EncoderConfig(vocab_size=8, emb_dim=4, num_heads=1, head_dim=4, mlp_dim=4,
                              num_layers=1, max_positions=6, pad_id=1, positions_from_padding=True)
  model = encoder.Encoder(cfg)
  with pytest.raises(ValueError, match='exceeds the 4 positions'):
    model.init(jax.random.key(0), jnp.ones((1, 5), jnp.int32))
  small = gpt2.GPT2Config(vocab_size=8, emb_dim=4, num_heads=1, head_dim=4, mlp_dim=4,
                          num_layers=1, max_positions=4)
  with pytest.raises(ValueError, match="GPT-2's 4 positions"):
    gpt2.GPT2(small).init(jax.random.key(0), jnp.ones((1, 5), jnp.int32))


# --- Sharding -----------------------------------------------------------------

@pytest.mark.parametrize('variant', ['albert_groups', 'gpt2'])
def test_every_param_has_logical_axes_and_sharded_equals_single(variant, tmp_path):
  """All params carry logical axes; a forward pass on a (data 4 x model 2) mesh equals the plain one."""
  model = _hf_model(variant)
  model.save_pretrained(tmp_path)
  params, config = family_checkpoints.load_hf(str(tmp_path))
  module = family_checkpoints.module(config)
  boxed = jax.eval_shape(module.init, jax.random.key(0), jnp.ones((1, 1), jnp.int32))['params']
  specs = flax.traverse_util.flatten_dict(nn.get_partition_spec(boxed), sep='/')
  unboxed = flax.traverse_util.flatten_dict(nn.unbox(boxed), sep='/')
  for name, spec in specs.items():
    assert spec is not None and len(spec) == unboxed[name].ndim, (name, spec)

  tokens, mask, types = _batch(model, seed=5)
  tokens, mask = np.tile(tokens, (4, 1))[:8], np.tile(mask, (4, 1))[:8]
  types = None if types is None else np.tile(types, (4, 1))[:8]
  expected = _ours(config, params, tokens, mask, types)
  mesh = partitioning.make_mesh(num_partitions=2)
  shardings = partitioning.logical_to_mesh_sharding(nn.get_partition_spec(boxed), mesh)
  with partitioning.axis_rules(mesh):
    sharded = jax.device_put(params, shardings)
    extra = {'mask': mask} if variant == 'gpt2' else {'token_types': types}
    ours = jax.jit(module.apply)({'params': sharded}, jnp.asarray(tokens), **extra)
  np.testing.assert_allclose(np.asarray(ours), expected, rtol=0, atol=1e-4)


def test_insert_prompt_slots_keeps_a_leading_token():
  tokens = jnp.array([[101, 7, 8, 0], [101, 9, 0, 0]])
  out, positions = layers.insert_prompt_slots(tokens, position=1, prompt_length=2, slot_id=5)
  np.testing.assert_array_equal(out, [[101, 5, 5, 7, 8, 0], [101, 5, 5, 9, 0, 0]])
  np.testing.assert_array_equal(positions, [[1, 2], [1, 2]])


@pytest.mark.parametrize('variant', ['gpt2'])
def test_lpt_generator_as_hook(variant, tmp_path):
  """lpt.py's generator + insert work as the hook: padding-blind, differentiable, prompt attended to."""
  from prompt_recycling import lpt  # pylint: disable=g-import-not-at-top
  model = _hf_model(variant)
  model.save_pretrained(tmp_path)
  params, config = family_checkpoints.load_hf(str(tmp_path))
  module = family_checkpoints.module(config)
  generator = lpt.PromptGenerator(prompt_length=3, bottleneck=4)
  tokens, mask, types = _batch(model, seed=6)  # Row 1 is right-padded.
  gen_params = generator.init(jax.random.key(0), jnp.zeros((1, 2, config.emb_dim)),
                              jnp.ones((1, 2), bool))['params']

  @jax.jit
  def logits_fn(gen_params, tokens, mask):
    def hook(hidden, hidden_mask):
      return lpt.insert(generator.apply({'params': gen_params}, hidden, hidden_mask), hidden,
                        hidden_mask)
    extra = {'mask': mask} if variant == 'gpt2' else {}
    return module.apply({'params': params}, tokens, **extra, hook=hook, hook_layer=1)

  logits = logits_fn(gen_params, jnp.asarray(tokens), jnp.asarray(mask))
  assert logits.shape == (3, 3 + LENGTH, VOCAB)
  # Row 1 alone, without its padding: the generator pooled over valid positions only.
  n = int(mask[1].sum())
  alone = logits_fn(gen_params, jnp.asarray(tokens[1:2, :n]), jnp.asarray(mask[1:2, :n]))
  np.testing.assert_allclose(logits[1, :3 + n], alone[0], rtol=0, atol=1e-4)
  # Text logits depend on the generator (the text attends to the late prompt).
  loss = lambda g: jnp.sum(logits_fn(g, jnp.asarray(tokens), jnp.asarray(mask))[:, 3:] ** 2)
  grads = jax.jit(jax.grad(loss))(gen_params)
  assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads))


@pytest.mark.parametrize('variant', ['bert', 'gpt2'])
def test_older_tensor_names_load_the_same(variant, tmp_path):
  """Hub files of the original models: no task prefix (GPT-2), TF-era LayerNorm.gamma/beta (BERT)."""
  model = _hf_model(variant)
  model.save_pretrained(tmp_path / 'new')
  model.config.save_pretrained(tmp_path / 'old')
  renamed = {}
  for name, value in model.state_dict().items():
    if variant == 'gpt2':
      name = name.removeprefix('transformer.')
    else:
      name = name.replace('LayerNorm.weight', 'LayerNorm.gamma').replace('LayerNorm.bias',
                                                                            'LayerNorm.beta')
    renamed[name] = value
  torch.save(renamed, tmp_path / 'old' / 'pytorch_model.bin')
  old, _ = family_checkpoints.load_hf(str(tmp_path / 'old'))
  new, _ = family_checkpoints.load_hf(str(tmp_path / 'new'))
  flat_old = flax.traverse_util.flatten_dict(old, sep='/')
  flat_new = flax.traverse_util.flatten_dict(new, sep='/')
  assert sorted(flat_old) == sorted(flat_new)
  for name, value in flat_new.items():
    np.testing.assert_array_equal(flat_old[name], value, err_msg=name)


@pytest.mark.parametrize('variant', ['albert'])
def test_bfloat16_activations_change_only_precision(variant, tmp_path):
  import dataclasses  # pylint: disable=g-import-not-at-top
  model = _hf_model(variant)
  model.save_pretrained(tmp_path)
  params, config = family_checkpoints.load_hf(str(tmp_path))
  tokens, mask, types = _batch(model, seed=7)
  full = _ours(config, params, tokens, mask, types)
  half = _ours(dataclasses.replace(config, dtype='bfloat16'), params, tokens, mask, types)
  assert half.dtype == np.float32  # Logits come back in float32 either way.
  scale = np.abs(full[mask]).max()
  assert np.abs(half[mask] - full[mask]).max() < 0.05 * scale
  assert np.abs(half[mask] - full[mask]).max() > 0  # bfloat16 did run.
