"""`python -m consumer.cli`: the `metricfold` command without its console script."""

import sys

from consumer.cli import main

sys.exit(main())
