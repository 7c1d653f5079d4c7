import sys

from pgvar.cli import main

sys.exit(main())
