"""``python -m observability``: see ``observability._cli``."""

from observability._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
