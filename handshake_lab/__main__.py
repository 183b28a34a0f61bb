import sys

from handshake_lab.cli import main

sys.exit(main())
