"""``python -m jaxcam.cli``: the ``jaxcam`` command."""

from jaxcam.cli import console_main

console_main()
