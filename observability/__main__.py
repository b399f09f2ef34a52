"""``python -m observability``: see ``observability.cli.main``."""

from observability.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
