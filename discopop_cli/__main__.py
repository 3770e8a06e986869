"""`python -m discopop_cli` is the `discopop` command."""

from discopop_cli.cli import main

main()
