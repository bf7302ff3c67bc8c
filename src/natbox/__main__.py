"""`python -m natbox`."""

import sys

from natbox.cli.main import main

sys.exit(main())
