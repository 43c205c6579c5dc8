"""`python -m devbox` and the `devbox` console script."""

from __future__ import annotations


def main() -> None:
    from devbox.cli import run

    run()


if __name__ == "__main__":
    main()
