"""``python -m jaxcam.cli``: the ``jaxcam`` command."""

import sys

from jaxcam.cli import main

sys.exit(main())
