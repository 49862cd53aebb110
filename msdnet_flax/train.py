"""Old name of :mod:`msdnet_flax.training`, kept so ``python -m msdnet_flax.train`` and
``from msdnet_flax.train import ...`` keep working."""

from msdnet_flax.training.loop import TrainConfig as TrainConfig
from msdnet_flax.training.loop import TrainState as TrainState
from msdnet_flax.training.loop import main as main
from msdnet_flax.training.loop import make_optimizer as make_optimizer
from msdnet_flax.training.loop import make_schedule as make_schedule
from msdnet_flax.training.loop import make_train_step as make_train_step
from msdnet_flax.training.loop import train as train

if __name__ == "__main__":
    main()
