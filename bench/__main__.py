"""`python -m bench [NAME ...] [--option ...]`: run every benchmark module with a main(), or the
named ones; options after the names go to their main():
`python -m bench scale --pairs 500000`."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
import traceback
from pathlib import Path


def discover() -> list[str]:
    """Module names in bench/, in alphabetical order, leaving out the package's own files."""
    here = Path(__file__).parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_"))


def run(names: list[str]) -> int:
    failed = []  # each benchmark prints the machine line beside its own figures (bench.common)
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        main = getattr(module, "main", None)
        if not callable(main):
            continue
        print(f"== bench.{name}", flush=True)
        start = time.perf_counter()
        try:
            main()
        except Exception:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            failed.append(name)
        print(f"== bench.{name}: {time.perf_counter() - start:.1f} s\n", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    # `python -m bench NAME --option ...`: options after the names go to NAME's main().
    args = sys.argv[1:]
    first_option = next((i for i, a in enumerate(args) if a.startswith("-")), len(args))
    chosen, sys.argv = args[:first_option] or discover(), [sys.argv[0], *args[first_option:]]
    unknown = sorted(set(chosen) - set(discover()))
    if unknown:
        sys.exit(f"no such benchmark: {', '.join(unknown)} (have: {', '.join(discover())})")
    sys.exit(run(chosen))
