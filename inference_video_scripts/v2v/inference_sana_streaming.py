"""The release's entry point, kept so its documented command lines work unchanged: it runs
`sana-streaming edit` with the same flags."""

import sys

from sana_streaming.cli import main

if __name__ == "__main__":
    sys.exit(main(["edit", *sys.argv[1:]]))
