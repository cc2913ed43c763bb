"""``python -m opsflow`` is the ``opsflow`` command."""

from opsflow.cli import main

main()
