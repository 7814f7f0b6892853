"""Allow ``python -m stcrank``."""

from stcrank.cli import main

if __name__ == "__main__":
    main()
