"""`python -m allmende.cli`: the `allmende` command without its console script."""

import sys

from allmende.cli.main import main

sys.exit(main())
