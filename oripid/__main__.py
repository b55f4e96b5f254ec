"""`python -m oripid` and `accelerate launch -m oripid build ...` enter here."""

from oripid.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
