"""Old name of :mod:`msdnet_flax.evaluation`, kept so ``python -m msdnet_flax.evaluate`` and
``from msdnet_flax.evaluate import ...`` keep working."""

from msdnet_flax.evaluation.core import DEFAULT_P as DEFAULT_P
from msdnet_flax.evaluation.core import anytime as anytime
from msdnet_flax.evaluation.core import apply_thresholds as apply_thresholds
from msdnet_flax.evaluation.core import budgeted as budgeted
from msdnet_flax.evaluation.core import exit_accuracy as exit_accuracy
from msdnet_flax.evaluation.core import exit_fractions as exit_fractions
from msdnet_flax.evaluation.core import find_thresholds as find_thresholds
from msdnet_flax.evaluation.core import format_anytime as format_anytime
from msdnet_flax.evaluation.core import format_budgeted as format_budgeted
from msdnet_flax.evaluation.core import main as main
from msdnet_flax.evaluation.core import max_softmax as max_softmax
from msdnet_flax.evaluation.core import predict as predict

if __name__ == "__main__":
    main()
