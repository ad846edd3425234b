import sys

from pmjax.cli.app import main

sys.exit(main())
