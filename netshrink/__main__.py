"""`python -m netshrink ...`, the same as the `netshrink` command; `torchrun -m netshrink ...` starts it
on several processes."""

import sys

from netshrink.cli import main

sys.exit(main())
