import sys

from ringfold.cli import main

sys.exit(main())
