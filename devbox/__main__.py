"""`python -m devbox` and the `devbox` console script."""

from __future__ import annotations

import sys


def main() -> None:
    from devbox.cli import fastpath

    if fastpath.run(sys.argv[1:]):
        return
    from devbox.cli.app import run

    run()


if __name__ == "__main__":
    main()
