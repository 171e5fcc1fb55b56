"""`python -m cvae` is the single-run command too (same as `python -m cvae.train`)."""
import sys

from cvae.cli import main

sys.exit(main())
