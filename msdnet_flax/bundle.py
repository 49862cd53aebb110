"""Old name of :mod:`msdnet_flax.training.bundle`, kept so ``python -m msdnet_flax.bundle`` and
``from msdnet_flax.bundle import ...`` keep working."""

from msdnet_flax.training.bundle import CARD_SEEDS as CARD_SEEDS
from msdnet_flax.training.bundle import FLOAT16_TOLERANCE as FLOAT16_TOLERANCE
from msdnet_flax.training.bundle import bundle as bundle
from msdnet_flax.training.bundle import main as main

if __name__ == "__main__":
    main()
