"""``python -m statusbridge``: the command-line monitor."""

from statusbridge.cli import main_entry

main_entry()
