"""``python -m edgevit.cli`` (e.g. under ``torchrun``): the same entry point as the ``edgevit`` script."""

from edgevit.cli import main

main()
