"""`python -m msarepro.cli ...`: the same as the `msarepro` command."""
import sys

from . import main

sys.exit(main())
