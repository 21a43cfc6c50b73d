"""T5 against Hugging Face's reference, and the model's options and hooks.

Parity: a randomly initialised `transformers.T5ForConditionalGeneration` is
saved with `save_pretrained` and read back through `checkpoints.load_params`,
so the test covers the name/layout mapping and the model together. Layer norm
scales are randomised too (HF initialises them to 1, which would hide a
mis-mapped norm), and the encoder and decoder have different depths. The
attention and MLP output projections are scaled up: at HF's initial scale the
residual stream is dominated by the input embedding, and a tied model just
echoes its previous token (or padding), which would make greedy agreement
trivial.
"""
import dataclasses
import functools

import flax.linen as nn

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_recycling import checkpoints
from prompt_recycling.models import decoding
from prompt_recycling.models import t5

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

VOCAB = 96


@pytest.fixture(scope='module', autouse=True)
def one_torch_thread():
  """Torch's thread pool spins against JAX's on a small shared CPU (0.02 s -> 7 s a call)."""
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(threads)
# (feed_forward_proj, how the output layer is stored): T5 1.1 has a separate
# unscaled lm_head; original T5 scales the decoder output and ties it to the
# embedding; the third (transformers 5 can write it) scales a separate lm_head.
PARITY_CASES = {'t5_1_1_gated_gelu_untied': ('gated-gelu', False, True),
                't5_relu_tied': ('relu', True, False),
                'scaled_separate_lm_head': ('gated-relu', True, True)}


def _hf_model(proj: str, scaled: bool, separate_head: bool):
  torch.manual_seed(0)
  config = transformers.T5Config(
      vocab_size=VOCAB, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2,
      num_decoder_layers=3, feed_forward_proj=proj, tie_word_embeddings=scaled,
      relative_attention_num_buckets=16, relative_attention_max_distance=20, dropout_rate=0.0,
      decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
  model = transformers.T5ForConditionalGeneration(config).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if 'layer_norm' in name:
        p.uniform_(0.5, 1.5)
      if name.endswith(('.o.weight', '.wo.weight')):
        p.mul_(30.0)
    if separate_head:
      # Untied, at a trained T5 1.1 head's scale (logits of a few units).
      model.lm_head.weight = torch.nn.Parameter(torch.randn(VOCAB, 32) * 32 ** -0.5)
  assert (model.lm_head.weight.data_ptr() == model.shared.weight.data_ptr()) != separate_head
  return model


def _inputs():
  rng = np.random.RandomState(0)
  enc = rng.randint(2, VOCAB, size=(3, 40))
  enc[1, 30:] = 0  # Padding: masked in both models.
  enc[2, 12:] = 0
  dec = rng.randint(2, VOCAB, size=(3, 37))
  dec[:, 0] = 0  # The decoder start token.
  return enc, dec


@pytest.fixture(scope='module', params=list(PARITY_CASES), ids=list(PARITY_CASES))
def parity_pair(request, tmp_path_factory):
  """(HF model, our T5, our params) for one case, through files on disk."""
  proj, scaled, separate_head = PARITY_CASES[request.param]
  hf = _hf_model(proj, scaled, separate_head)
  path = tmp_path_factory.mktemp(request.param)
  hf.save_pretrained(path)
  params, config = checkpoints.load_params(str(path))
  assert config.logits_via_embedding == (scaled and not separate_head)
  assert config.num_encoder_layers == 2 and config.num_decoder_layers == 3
  return hf, t5.T5(config), params


def test_logits_match_hugging_face(parity_pair):
  hf, model, params = parity_pair
  enc, dec = _inputs()
  with torch.no_grad():
    ref = hf(input_ids=torch.tensor(enc), attention_mask=torch.tensor(enc > 0).long(),
             decoder_input_ids=torch.tensor(dec)).logits.numpy()
  ours = np.asarray(jax.jit(model.apply)({'params': params}, jnp.asarray(enc), jnp.asarray(dec)))
  assert ours.shape == ref.shape == (3, 37, VOCAB)
  assert ref.std(-1).min() > 0.1  # Every position separates the tokens.
  np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4)


def test_greedy_decoding_matches_hugging_face_generate(parity_pair):
  hf, model, params = parity_pair
  enc, _ = _inputs()
  steps = 12
  with torch.no_grad():
    # use_cache=False: transformers' cached generate fails when the decoder is
    # deeper than the encoder, as here.
    ref = hf.generate(input_ids=torch.tensor(enc), attention_mask=torch.tensor(enc > 0).long(),
                      max_new_tokens=steps, do_sample=False, num_beams=1, use_cache=False).numpy()
  ref = ref[:, 1:]  # Drop the start token.
  ref = np.pad(ref, ((0, 0), (0, steps - ref.shape[1])))  # All rows may end early.
  decode = jax.jit(functools.partial(decoding.greedy_decode, model, max_decode_length=steps))
  ours = np.asarray(decode({'params': params}, jnp.asarray(enc)))
  # Varied tokens in every row, so agreement means something.
  assert min(len(np.unique(row[row > 1])) for row in ref) >= 3, ref
  np.testing.assert_array_equal(ours, ref)


# --- Options and hooks of our model (a small random T5) ------------------------------

SMALL = t5.T5Config(vocab_size=64, emb_dim=16, num_heads=2, num_encoder_layers=2,
                    num_decoder_layers=2, head_dim=8, mlp_dim=32, relative_attention_num_buckets=8,
                    relative_attention_max_distance=16)


@pytest.fixture(scope='module')
def small():
  rng = np.random.RandomState(1)
  enc = rng.randint(2, 64, size=(2, 10))
  enc[1, 7:] = 0
  dec = rng.randint(2, 64, size=(2, 6))
  dec[:, 0] = 0
  enc, dec = jnp.asarray(enc), jnp.asarray(dec)
  variables = jax.jit(t5.T5(SMALL).init)(jax.random.key(0), enc, dec)
  return nn.unbox(variables)['params'], enc, dec


def _loss_and_grads(config, params, enc, dec):
  def loss_fn(p):
    logits = t5.T5(config).apply({'params': p}, enc, dec)
    targets = jnp.roll(dec, -1, axis=1)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], -1)), logits
  (loss, logits), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params)
  return loss, logits, grads


@pytest.fixture(scope='module')
def no_remat(small):
  return _loss_and_grads(SMALL, *small)


@pytest.mark.parametrize('policy', ['full', 'minimal'])
def test_remat_gives_the_same_logits_and_gradients(small, no_remat, policy):
  loss, logits, grads = no_remat
  remat = dataclasses.replace(SMALL, remat_policy=policy)
  loss_r, logits_r, grads_r = _loss_and_grads(remat, *small)
  np.testing.assert_allclose(loss_r, loss, rtol=1e-6)
  np.testing.assert_allclose(logits_r, logits, rtol=0, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), grads_r, grads)
  assert float(jnp.abs(grads['encoder']['layers_0']['attention']['query']['kernel']).max()) > 0


def test_remat_policy_is_checked():
  with pytest.raises(ValueError, match="remat_policy must be 'none', 'full' or 'minimal'"):
    t5.T5Config(remat_policy='some')


def test_bfloat16_activations_run_and_stay_close(small):
  params, enc, dec = small
  f32 = np.asarray(jax.jit(t5.T5(SMALL).apply)({'params': params}, enc, dec))
  bf16 = jax.jit(t5.T5(dataclasses.replace(SMALL, dtype='bfloat16')).apply)(
      {'params': params}, enc, dec)
  assert bf16.dtype == jnp.float32  # Logits come back in float32 whatever the activations.
  bf16 = np.asarray(bf16)
  assert np.isfinite(bf16).all()
  # bfloat16 keeps 8 bits of mantissa: a few percent of the logits' range.
  assert np.abs(bf16 - f32).max() < 0.05 * np.abs(f32).max()
  assert (bf16.argmax(-1) == f32.argmax(-1)).mean() >= 0.9


def test_prefix_equals_feeding_those_tokens(small):
  params, enc, dec = small
  model = t5.T5(SMALL)
  prompt_ids = jnp.asarray([5, 17, 33])
  prefix = jnp.broadcast_to(params['token_embedder']['embedding'][prompt_ids], (2, 3, 16))
  with_prefix = model.apply({'params': params}, enc, dec, prefix=prefix)
  as_tokens = model.apply({'params': params},
                          jnp.concatenate([jnp.broadcast_to(prompt_ids, (2, 3)), enc], 1), dec)
  np.testing.assert_allclose(with_prefix, as_tokens, rtol=0, atol=1e-5)
  encoded, mask = model.apply({'params': params}, enc, prefix, method=t5.T5.encode)
  assert encoded.shape == (2, 13, 16)
  np.testing.assert_array_equal(mask, jnp.concatenate([jnp.ones((2, 3), bool), enc > 0], 1))


@pytest.mark.parametrize('hook_layer', [0, 1, 2])  # 2 = after the last layer, before the norm.
def test_identity_hook_equals_no_hook(small, hook_layer):
  params, enc, dec = small
  model = t5.T5(SMALL)
  plain = model.apply({'params': params}, enc, dec)
  calls = []

  def identity(hidden, mask):
    calls.append(hidden.shape)
    return hidden, mask

  hooked = model.apply({'params': params}, enc, dec, hook=identity, hook_layer=hook_layer)
  assert calls == [(2, 10, 16)]
  np.testing.assert_array_equal(hooked, plain)


@pytest.mark.parametrize('hook_layer', [-1, 3, None])
def test_out_of_range_hook_layer_raises(small, hook_layer):
  params, enc, dec = small
  with pytest.raises(ValueError, match=rf'hook_layer must be in \[0, 2\] for a 2-layer encoder, '
                                       rf'got {hook_layer}'):
    t5.T5(SMALL).apply({'params': params}, enc, dec, hook=lambda h, m: (h, m), hook_layer=hook_layer)
