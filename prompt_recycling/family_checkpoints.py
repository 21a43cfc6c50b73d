"""Hugging Face checkpoints of BERT, RoBERTa, ALBERT and GPT-2 -> our parameter trees.

A local directory written by `save_pretrained` (or downloaded from the Hub)
holds `config.json` and `model.safetensors` (possibly sharded) or
`pytorch_model.bin`; the files are read by `checkpoints.py`'s `_HFReader`
(safetensors lazily, torch .bin memory-mapped), as for T5. This module only
knows the families' configs and tensor names:

  * `config_from_hf(config_json)` -> `EncoderConfig` (model_type bert, roberta,
    albert) or `GPT2Config` (gpt2), refusing options the Flax models lack
    (relative position embeddings, ALBERT inner groups, untied output layers);
  * `load_hf(path, only=None)` -> (params, config), the tree named as
    `models/encoder.py` / `models/gpt2.py` name it.

Layout changes: torch `Linear` weights `[out, in]` are transposed to kernels
`[in, out]`; GPT-2's `Conv1D` weights are already `[in, out]` and its joint
`c_attn` `[embed, 3 * embed]` is split into query, key and value. Tensor names
are found with or without the task prefix (`bert.`, `roberta.`, `albert.`,
`transformer.`) and with TF-era `LayerNorm.gamma`/`beta` names. The masked-LM
and GPT-2 output layers are tied to the token embedding; a stored decoder
weight that differs from it is refused.
"""
import functools
import json
import os
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax
import numpy as np

from prompt_recycling import checkpoints
from prompt_recycling.checkpoints import CheckpointError
from prompt_recycling.models import encoder
from prompt_recycling.models import gpt2

Params = Dict[str, Any]
Config = Union[encoder.EncoderConfig, gpt2.GPT2Config]
ENCODER_FAMILIES = ('bert', 'roberta', 'albert')
FAMILIES = ENCODER_FAMILIES + ('gpt2',)
# Task-model prefixes of the base model's tensors, first found wins.
_PREFIXES = {'bert': ('bert.', ''), 'roberta': ('roberta.', ''), 'albert': ('albert.', ''),
             'gpt2': ('transformer.', '')}


# --- Configs ------------------------------------------------------------------

def _get(config: Dict[str, Any], key: str, source: str) -> Any:
  try:
    return config[key]
  except KeyError:
    raise CheckpointError(f'{source} lacks {key!r}, needed for the model sizes.') from None


def _head_dim(hidden: int, heads: int, source: str) -> int:
  if hidden % heads:
    raise CheckpointError(f'{source}: hidden size {hidden} is not divisible by {heads} heads.')
  return hidden // heads


def family(config: Dict[str, Any], source: str = 'config.json') -> str:
  """The config's `model_type`, one of FAMILIES."""
  model_type = config.get('model_type')
  if model_type not in FAMILIES:
    raise CheckpointError(f'{source} has model_type {model_type!r}; this loader reads '
                          f'{FAMILIES} (T5 and mT5: checkpoints.load_params).')
  return model_type


def encoder_config_from_hf(config: Dict[str, Any], source: str = 'config.json'
                           ) -> encoder.EncoderConfig:
  """A BERT / RoBERTa / ALBERT config.json dict -> `EncoderConfig`."""
  kind = family(config, source)
  if kind not in ENCODER_FAMILIES:
    raise CheckpointError(f'{source} is a {kind} config, not one of {ENCODER_FAMILIES}.')
  if config.get('position_embedding_type', 'absolute') != 'absolute':
    raise CheckpointError(f'{source}: position_embedding_type '
                          f'{config["position_embedding_type"]!r} is not supported (absolute only).')
  if config.get('tie_word_embeddings', True) is False:
    raise CheckpointError(f'{source}: untied masked-LM output layers are not supported.')
  if kind == 'albert' and config.get('inner_group_num', 1) != 1:
    raise CheckpointError(f'{source}: ALBERT inner_group_num {config["inner_group_num"]} is not '
                          'supported (every released ALBERT has 1).')
  hidden, heads = _get(config, 'hidden_size', source), _get(config, 'num_attention_heads', source)
  act = config.get('hidden_act', 'gelu')
  default_pad = 1 if kind == 'roberta' else 0
  pad = config.get('pad_token_id')
  try:
    return encoder.EncoderConfig(
        vocab_size=_get(config, 'vocab_size', source), emb_dim=hidden,
        embedding_size=config.get('embedding_size') if kind == 'albert' else None,
        num_heads=heads, head_dim=_head_dim(hidden, heads, source),
        mlp_dim=_get(config, 'intermediate_size', source),
        num_layers=_get(config, 'num_hidden_layers', source),
        num_layer_groups=config.get('num_hidden_groups', 1) if kind == 'albert' else 0,
        max_positions=_get(config, 'max_position_embeddings', source),
        type_vocab_size=config.get('type_vocab_size', 2),
        pad_id=default_pad if pad is None else pad,
        positions_from_padding=kind == 'roberta',
        activation=act,
        # RobertaLMHead applies exact GELU whatever hidden_act says.
        head_activation='gelu' if kind == 'roberta' else act,
        layer_norm_epsilon=config.get('layer_norm_eps', 1e-12))
  except ValueError as e:
    raise CheckpointError(f'{source}: {e}') from None


def gpt2_config_from_hf(config: Dict[str, Any], source: str = 'config.json') -> gpt2.GPT2Config:
  """A GPT-2 config.json dict -> `GPT2Config`."""
  if family(config, source) != 'gpt2':
    raise CheckpointError(f'{source} is a {config.get("model_type")} config, not gpt2.')
  if config.get('scale_attn_by_inverse_layer_idx', False) or not config.get(
      'scale_attn_weights', True):
    raise CheckpointError(f'{source}: only the standard 1/sqrt(head_dim) attention scaling is '
                          'supported (scale_attn_weights=True, scale_attn_by_inverse_layer_idx='
                          'False).')
  if config.get('tie_word_embeddings', True) is False:
    raise CheckpointError(f'{source}: an untied GPT-2 output layer is not supported.')
  hidden, heads = _get(config, 'n_embd', source), _get(config, 'n_head', source)
  try:
    return gpt2.GPT2Config(
        vocab_size=_get(config, 'vocab_size', source), emb_dim=hidden, num_heads=heads,
        head_dim=_head_dim(hidden, heads, source), mlp_dim=config.get('n_inner') or 4 * hidden,
        num_layers=_get(config, 'n_layer', source),
        max_positions=_get(config, 'n_positions', source),
        activation=config.get('activation_function', 'gelu_new'),
        layer_norm_epsilon=config.get('layer_norm_epsilon', 1e-5))
  except ValueError as e:
    raise CheckpointError(f'{source}: {e}') from None


def config_from_hf(config: Dict[str, Any], source: str = 'config.json') -> Config:
  """Any supported family's config.json dict -> its config dataclass."""
  if family(config, source) == 'gpt2':
    return gpt2_config_from_hf(config, source)
  return encoder_config_from_hf(config, source)


def module(config: Config) -> nn.Module:
  """The Flax module of `config`'s family."""
  return gpt2.GPT2(config) if isinstance(config, gpt2.GPT2Config) else encoder.Encoder(config)


# --- Name maps ----------------------------------------------------------------

# Our param path -> (HF tensor name, how to convert): 'T' transpose, '' as is,
# ('split', i) the i-th third of the last axis (GPT-2's c_attn: q, k, v).
Names = Dict[str, Tuple[str, Any]]


def _encoder_names(cfg: encoder.EncoderConfig, kind: str, p: str) -> Names:
  """Names of BertForMaskedLM / RobertaForMaskedLM / AlbertForMaskedLM tensors (prefix `p`)."""
  emb = f'{p}embeddings'
  names: Names = {
      'token_embedder/embedding': (f'{emb}.word_embeddings.weight', ''),
      'position_embedder/embedding': (f'{emb}.position_embeddings.weight', ''),
      'token_type_embedder/embedding': (f'{emb}.token_type_embeddings.weight', ''),
      'embedding_norm/scale': (f'{emb}.LayerNorm.weight', ''),
      'embedding_norm/bias': (f'{emb}.LayerNorm.bias', ''),
  }

  def dense(ours, theirs):
    names[f'{ours}/kernel'] = (f'{theirs}.weight', 'T')
    names[f'{ours}/bias'] = (f'{theirs}.bias', '')

  def norm(ours, theirs):
    names[f'{ours}/scale'] = (f'{theirs}.weight', '')
    names[f'{ours}/bias'] = (f'{theirs}.bias', '')

  if kind == 'albert':
    dense('embedding_projection', f'{p}encoder.embedding_hidden_mapping_in')
    for g in range(cfg.num_param_layers):
      theirs, ours = f'{p}encoder.albert_layer_groups.{g}.albert_layers.0', f'layers_{g}'
      for a in ('query', 'key', 'value'):
        dense(f'{ours}/attention/{a}', f'{theirs}.attention.{a}')
      dense(f'{ours}/attention/out', f'{theirs}.attention.dense')
      norm(f'{ours}/attention_norm', f'{theirs}.attention.LayerNorm')
      dense(f'{ours}/mlp/wi', f'{theirs}.ffn')
      dense(f'{ours}/mlp/wo', f'{theirs}.ffn_output')
      norm(f'{ours}/mlp_norm', f'{theirs}.full_layer_layer_norm')
    head = {'dense': 'predictions.dense', 'norm': 'predictions.LayerNorm',
            'bias': 'predictions.bias'}
  else:
    for i in range(cfg.num_layers):
      theirs, ours = f'{p}encoder.layer.{i}', f'layers_{i}'
      for a in ('query', 'key', 'value'):
        dense(f'{ours}/attention/{a}', f'{theirs}.attention.self.{a}')
      dense(f'{ours}/attention/out', f'{theirs}.attention.output.dense')
      norm(f'{ours}/attention_norm', f'{theirs}.attention.output.LayerNorm')
      dense(f'{ours}/mlp/wi', f'{theirs}.intermediate.dense')
      dense(f'{ours}/mlp/wo', f'{theirs}.output.dense')
      norm(f'{ours}/mlp_norm', f'{theirs}.output.LayerNorm')
    if kind == 'roberta':
      head = {'dense': 'lm_head.dense', 'norm': 'lm_head.layer_norm', 'bias': 'lm_head.bias'}
    else:
      head = {'dense': 'cls.predictions.transform.dense',
              'norm': 'cls.predictions.transform.LayerNorm', 'bias': 'cls.predictions.bias'}
  dense('mlm_head/dense', head['dense'])
  norm('mlm_head/norm', head['norm'])
  names['mlm_head/bias'] = (head['bias'], '')
  return names


def _gpt2_names(cfg: gpt2.GPT2Config, p: str) -> Names:
  """Names of GPT2LMHeadModel tensors (prefix `p`); Conv1D weights are [in, out]."""
  names: Names = {'token_embedder/embedding': (f'{p}wte.weight', ''),
                  'position_embedder/embedding': (f'{p}wpe.weight', ''),
                  'final_norm/scale': (f'{p}ln_f.weight', ''),
                  'final_norm/bias': (f'{p}ln_f.bias', '')}
  for i in range(cfg.num_layers):
    theirs, ours = f'{p}h.{i}', f'layers_{i}'
    for j, a in enumerate(('query', 'key', 'value')):
      names[f'{ours}/attention/{a}/kernel'] = (f'{theirs}.attn.c_attn.weight', ('split', j))
      names[f'{ours}/attention/{a}/bias'] = (f'{theirs}.attn.c_attn.bias', ('split', j))
    for ours_name, theirs_name in (('attention/out', 'attn.c_proj'), ('mlp/wi', 'mlp.c_fc'),
                                   ('mlp/wo', 'mlp.c_proj')):
      names[f'{ours}/{ours_name}/kernel'] = (f'{theirs}.{theirs_name}.weight', '')
      names[f'{ours}/{ours_name}/bias'] = (f'{theirs}.{theirs_name}.bias', '')
    for n, ln in (('attention_norm', 'ln_1'), ('mlp_norm', 'ln_2')):
      names[f'{ours}/{n}/scale'] = (f'{theirs}.{ln}.weight', '')
      names[f'{ours}/{n}/bias'] = (f'{theirs}.{ln}.bias', '')
  return names


# Alternatives tried when a name is absent: TF-era layer norms, decoder-held biases.
_ALTERNATIVES = (('LayerNorm.weight', 'LayerNorm.gamma'), ('LayerNorm.bias', 'LayerNorm.beta'),
                 ('predictions.bias', 'predictions.decoder.bias'),
                 ('lm_head.bias', 'lm_head.decoder.bias'))
# The stored (tied) output layer, when a checkpoint keeps one.
_DECODERS = ('cls.predictions.decoder.weight', 'lm_head.decoder.weight',
             'predictions.decoder.weight', 'lm_head.weight')


def _resolve(name: str, available) -> str:
  if name in available:
    return name
  for ours, old in _ALTERNATIVES:
    if name.endswith(ours) and name[:-len(ours)] + old in available:
      return name[:-len(ours)] + old
  return name


def _prefix(kind: str, available) -> str:
  probe = 'wte.weight' if kind == 'gpt2' else 'embeddings.word_embeddings.weight'
  for p in _PREFIXES[kind]:
    if p + probe in available:
      return p
  raise CheckpointError(f'No {probe} (with or without {_PREFIXES[kind][0]!r}) among the '
                        f'tensors; e.g. {sorted(available)[:4]}. Is it a {kind} checkpoint?')


def hf_names(config: Config, kind: str, available) -> Names:
  """Our param path -> (HF tensor name present in `available`, conversion)."""
  p = _prefix(kind, available)
  names = (_gpt2_names(config, p) if kind == 'gpt2' else _encoder_names(config, kind, p))
  return {ours: (_resolve(theirs, available), how) for ours, (theirs, how) in names.items()}


# --- Loading ------------------------------------------------------------------

def read_config(path: str) -> Dict[str, Any]:
  """The config.json dict of a local HF directory."""
  config_file = os.path.join(path, 'config.json')
  if not os.path.isfile(config_file):
    raise CheckpointError(f'{path} has no config.json; it is needed for the model sizes '
                          "(write it with the model's save_pretrained).")
  try:
    return json.loads(checkpoints._read_bytes(config_file))  # pylint: disable=protected-access
  except json.JSONDecodeError as e:
    raise CheckpointError(f'{config_file} is not valid JSON: {e}') from e


def _convert(value: np.ndarray, how: Any) -> np.ndarray:
  if how == 'T':
    return np.ascontiguousarray(value.T)
  if isinstance(how, tuple):  # ('split', i): the i-th third of the last axis.
    return np.ascontiguousarray(np.split(value, 3, axis=-1)[how[1]])
  return value


@functools.lru_cache(maxsize=16)
def expected_shapes(config: Config) -> Dict[str, Tuple[int, ...]]:
  """{param path: shape} of `module(config)`, traced abstractly (nothing allocated)."""
  tokens = jax.ShapeDtypeStruct((1, 1), np.int32)
  abstract = jax.eval_shape(module(config).init, jax.random.key(0), tokens)
  flat = checkpoints._flatten(nn.unbox(abstract)['params'])  # pylint: disable=protected-access
  return {p: tuple(v.shape) for p, v in flat.items()}


def load_hf(path: str, only: Optional[Sequence[str]] = None) -> Tuple[Params, Config]:
  """Reads a local HF BERT / RoBERTa / ALBERT / GPT-2 checkpoint directory.

  Args:
    path: directory with config.json and model.safetensors (or its index) or
      pytorch_model.bin (or its index).
    only: optional param paths (or prefixes) to read, e.g.
      ['token_embedder/embedding'] for recycling; default everything.

  Returns:
    (params: nested dict of numpy arrays in their stored dtype, config).

  Raises:
    CheckpointError: a missing file or tensor, an unsupported option, or a
      tensor whose shape disagrees with config.json (both shapes named).
  """
  if checkpoints._is_url(path):  # pylint: disable=protected-access
    raise CheckpointError(f'Hugging Face checkpoints are read from local directories; copy {path} '
                          'to local disk first (e.g. huggingface_hub.snapshot_download).')
  hf_config = read_config(path)
  source = os.path.join(path, 'config.json')
  kind = family(hf_config, source)
  config = config_from_hf(hf_config, source)
  reader = checkpoints._HFReader(path)  # pylint: disable=protected-access
  names = hf_names(config, kind, reader.names)
  checkpoints._check_only_found(names, only, path)  # pylint: disable=protected-access
  names = {ours: n for ours, n in names.items()
           if checkpoints._wanted(ours, only)}  # pylint: disable=protected-access
  wanted = {theirs for theirs, _ in names.values()}
  missing = sorted(wanted - set(reader.names))
  if missing:
    raise CheckpointError(f'{path} has no tensor(s) {missing[:4]} needed for a {kind} '
                          f'{"causal" if kind == "gpt2" else "masked"} LM (a base model without '
                          'its LM head, or another architecture?).')
  decoder = next((d for d in _DECODERS if d in reader.names), None)
  check_tie = decoder is not None and 'token_embedder/embedding' in names
  tensors = reader.read(wanted | ({decoder} if check_tie else set()))
  flat = {ours: _convert(tensors[theirs], how) for ours, (theirs, how) in names.items()}
  if check_tie and not np.array_equal(tensors[decoder], flat['token_embedder/embedding']):
    raise CheckpointError(f'{path}: {decoder} differs from the token embedding; only models whose '
                          'output layer is tied to it are supported.')
  expected = expected_shapes(config)
  for ours in sorted(flat):
    if tuple(flat[ours].shape) != expected[ours]:
      raise CheckpointError(f'{path}: {names[ours][0]} gives {ours!r} shape '
                            f'{tuple(flat[ours].shape)}, but config.json implies {expected[ours]}.')
  if only is None and set(flat) != set(expected):
    raise CheckpointError(f'{path}: parameters {sorted(set(expected) - set(flat))[:4]} of the '
                          f'{kind} model were not mapped from the checkpoint.')
  return checkpoints._unflatten(flat), config  # pylint: disable=protected-access


# --- Any family ---------------------------------------------------------------

# [MASK] and end-of-text ids of the released vocabularies (bert-*-cased/uncased,
# roberta-*, albert-*-v2), used when the directory has no tokenizer files.
_SPECIAL_IDS = {'bert': (103, 102), 'roberta': (50264, 2), 'albert': (4, 3)}


def is_family_dir(path: str) -> bool:
  """Whether `path` is a local HF directory of a BERT / RoBERTa / ALBERT / GPT-2 model."""
  config = os.path.join(path, 'config.json')
  if checkpoints._is_url(path) or not os.path.isfile(config):  # pylint: disable=protected-access
    return False
  with open(config, encoding='utf-8') as f:
    return json.load(f).get('model_type') in FAMILIES


def load_model(path: str) -> Tuple[Params, Any]:
  """(params, `models.family` family) of any checkpoint the project reads.

  A HF BERT / RoBERTa / ALBERT / GPT-2 directory gives a `MaskedLM` or
  `CausalLM` whose special ids come from the tokenizer files in the directory
  when there are any (`family_tokenizers.load_any`), else from config.json
  (GPT-2's eos_token_id) and the released vocabularies' ids; anything else is
  read as T5 (`checkpoints.load_params`: T5X, or a HF T5 / mT5 directory) and
  gives an `EncoderDecoder`.
  """
  from prompt_recycling import family_tokenizers  # pylint: disable=g-import-not-at-top
  from prompt_recycling.models import family as families  # pylint: disable=g-import-not-at-top
  if not is_family_dir(path):
    params, config = checkpoints.load_params(path)
    return params, families.EncoderDecoder(config)
  params, config = load_hf(path)
  try:
    return params, families.from_tokenizer(config, family_tokenizers.load_any(path))
  except (ValueError, OSError, ImportError):  # No tokenizer files here (or no transformers).
    pass
  hf_config = read_config(path)
  if isinstance(config, gpt2.GPT2Config):
    return params, families.CausalLM(config, eos_id=hf_config.get('eos_token_id', 50256))
  mask_id, eos_id = _SPECIAL_IDS[family(hf_config)]
  return params, families.MaskedLM(config, mask_id=mask_id, eos_id=eos_id)


def load_token_embedding(path: str) -> np.ndarray:
  """The token table [vocab, embed] float32 of a T5 checkpoint or a HF directory of any family."""
  if is_family_dir(path):
    params, _ = load_hf(path, only=['token_embedder/embedding'])
    return np.asarray(params['token_embedder']['embedding'], np.float32)
  return checkpoints.load_token_embedding(path)
