import sys

from msdm.cli import main

sys.exit(main())
