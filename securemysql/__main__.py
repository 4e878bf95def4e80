"""``python -m securemysql`` runs the command-line interface."""

import sys

from securemysql.cli import main

sys.exit(main())
