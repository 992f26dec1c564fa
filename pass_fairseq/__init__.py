"""pass_fairseq: PASS / PASSCONC attention-head pruning as a fairseq user directory.

Importing the package registers everything: the gated models and their architectures
(``transformer_pass``, the language model ``transformer_lm_pass`` and the encoder
``roberta_pass``), the pruned models of converted checkpoints (``transformer_pass_pruned``,
``transformer_lm_pass_pruned``, ``roberta_pass_pruned``), the criteria
(``pass_label_smoothed_cross_entropy``, ``pass_cross_entropy``, ``pass_sentence_prediction``,
``label_smoothed_cross_entropy_kd``), the tasks (``translation_pass``,
``language_modeling_pass``, ``sentence_prediction_pass``) and the ``pass_adam`` optimizer.
"""
import logging
import os

#: the folder to give fairseq as ``--user-dir`` (this package's own)
PLUGIN_DIR = os.path.dirname(os.path.abspath(__file__))

# fairseq's text_to_speech task logs "Please install tensorboardX" at import (and calls
# logging.basicConfig): keep that line out of every command that imports the plugin.
logging.getLogger("fairseq.tasks.text_to_speech").setLevel(logging.WARNING)

from pass_fairseq.checkpoints import allow_checkpoint_globals  # noqa: E402

# torch >= 2.6 loads checkpoints with weights_only=True; fairseq checkpoints carry an
# argparse.Namespace (their model config), which must be allowed explicitly.
allow_checkpoint_globals()

from pass_fairseq.optim import pass_adam  # noqa: E402,F401
from pass_fairseq.models import transformer_pass, transformer_lm_pass, roberta_pass  # noqa: E402,F401
from pass_fairseq.tasks import translation_pass, language_modeling_pass, sentence_prediction_pass  # noqa: E402,F401
from pass_fairseq.criterions import pass_label_smoothed_cross_entropy, pass_cross_entropy  # noqa: E402,F401
from pass_fairseq.criterions import label_smoothed_cross_entropy_kd, pass_sentence_prediction  # noqa: E402,F401
from pass_fairseq.models import transformer_pass_pruned, transformer_lm_pass_pruned, roberta_pass_pruned  # noqa: E402,F401
