import sys

from webhook.console import main

sys.exit(main())
