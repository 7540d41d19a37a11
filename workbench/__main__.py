import sys

from workbench.app.cli import main

sys.exit(main())
