"""`python -m mtkit` runs the command line, so `torchrun -m mtkit train ...` works too."""

from mtkit.cli import main

if __name__ == "__main__":
    main()
