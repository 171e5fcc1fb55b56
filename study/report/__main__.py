"""`python -m study.report RESULTS_DIR_OR_URI [--out FILE]`: see study.report.cli."""
import sys

from study.report.cli import main

sys.exit(main())
