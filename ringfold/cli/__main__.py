"""``python -m ringfold.cli``: the same as ``ringfold``."""

import sys

from . import main

sys.exit(main())
