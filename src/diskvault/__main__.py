"""``python -m diskvault`` runs the command line."""

from .cli.main import main

main()
