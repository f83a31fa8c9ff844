import sys

from psc6k.cli import main

sys.exit(main())
