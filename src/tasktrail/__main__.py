"""``python -m tasktrail``: the command line."""

from tasktrail.cli import main

main()
