import sys

from skymath.cli import main

sys.exit(main())
