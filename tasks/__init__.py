"""SeqIO tasks for prompt tuning on frozen T5: SuperGLUE, SST-2, QQP, IMDB, LAMA.

Importing the package registers (SeqIO's TaskRegistry / MixtureRegistry):

  super_glue_{boolq,cb,copa,multirc,record,rte,wic,wsc,axb,axg}_v102,
  super_glue_wsc_v102_simple_{train,eval}, dpr_v001_simple, super_glue_v102_proportional
  glue_{cola,sst2,mrpc,qqp,stsb,mnli,mnli_matched,mnli_mismatched,qnli,rte,wnli,ax}_v2
  imdb_reviews
  <each of the above tasks>_taskless (tasks.variants), and the recycling code's
  verbalizers glue_qqp_v2_taskless_{0_1,unique_duplicate,not_spc_duplicate_duplicate},
  imdb_reviews_taskless_0_1
  lama_trex_<P> and lama_trex_soft_<P> for the 41 T-REx relations; lama_trex, lama_trex_soft

Before building a dataset, choose the vocabulary and (optionally) the data source:

  import tasks
  tasks.set_vocabulary('/path/to/t5/sentencepiece.model')   # or $PROMPT_RECYCLING_VOCAB
  tasks.set_data_source(local_dir='/path/to/data')         # or $PROMPT_RECYCLING_DATA_DIR;
                                                            # default: TFDS
  ds = tasks.get_task('glue_sst2_v2').get_dataset(
      {'inputs': 512, 'targets': 8}, split='validation', shuffle=False)
  tasks.label_words('glue_sst2_v2')  # ['negative', 'positive']

`python -m tasks.show_tasks` lists the tasks and shows examples. Nothing here
imports the training code (`prompt_recycling`).
"""
# pylint: disable=g-importing-member
from tasks import glue
from tasks import imdb
from tasks import lama
from tasks import metrics
from tasks import postprocessors
from tasks import preprocessors
from tasks import super_glue
from tasks import variants
from tasks.lama import set_lama_candidates
from tasks.registry import get_task
from tasks.registry import label_words
from tasks.registry import names
from tasks.registry import VOCABULARY
from tasks.settings import data_source
from tasks.settings import reset_data_source
from tasks.settings import set_data_source
from tasks.settings import set_vocabulary
from tasks.settings import vocabulary_path

# The prompt-tuning name for the same thing: the words that verbalize each class.
verbalizers = label_words

__all__ = [
    'VOCABULARY', 'data_source', 'get_task', 'glue', 'imdb', 'label_words', 'lama', 'metrics',
    'names', 'postprocessors', 'preprocessors', 'reset_data_source', 'set_data_source',
    'set_lama_candidates', 'set_vocabulary', 'super_glue', 'variants', 'verbalizers',
    'vocabulary_path',
]
