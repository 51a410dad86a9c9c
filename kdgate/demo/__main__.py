"""``python -m kdgate.demo``: see :mod:`kdgate.demo.run`."""
import sys

from kdgate.demo.run import main

sys.exit(main())
