"""`python -m webhook.fetch`: the init container's entry point without the console script."""

import sys

from webhook.fetch.main import main

sys.exit(main())
