"""`python -m intrinsic.cli`."""

from .app import main

main()
