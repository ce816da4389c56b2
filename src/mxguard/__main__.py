"""`python -m mxguard` runs the CLI."""

from mxguard.cli import main

main()
