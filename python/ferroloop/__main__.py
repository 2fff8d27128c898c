"""``python -m ferroloop``: run an asyncio program on ferroloop (see ``--help``)."""

import sys

from ._cli import main

if __name__ == "__main__":
    main(sys.argv[1:])
