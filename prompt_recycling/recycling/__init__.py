"""Prompt recycling: map a soft prompt between two models' embedding spaces.

  r = recycling.get_recycler('v2v-lin')          # or 'lin-comb', 'v2v-nn', ...
  params = r.fit(source_rows, target_rows, rng)   # [vocab, *_embed], row-aligned
  recycled = r.apply(params, prompt)              # [prompt_length, target_embed]

Arrays only: tables come from whoever reads checkpoints; see `vocab.py` for
choosing and aligning their rows.
"""
from prompt_recycling.recycling import base
from prompt_recycling.recycling import linear
from prompt_recycling.recycling import neural
from prompt_recycling.recycling import relative
from prompt_recycling.recycling import report
from prompt_recycling.recycling import vocab
from prompt_recycling.recycling.base import get_recycler
from prompt_recycling.recycling.base import load
from prompt_recycling.recycling.base import Recycler
from prompt_recycling.recycling.base import recycler_names
from prompt_recycling.recycling.base import save
