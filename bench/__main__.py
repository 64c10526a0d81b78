"""`python -m bench [NAME ...]`: run every benchmark module with a main(), or the named ones."""

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
    failed = []
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
    chosen = sys.argv[1:] or discover()
    unknown = sorted(set(chosen) - set(discover()))
    if unknown:
        sys.exit(f"no such benchmark: {', '.join(unknown)} (have: {', '.join(discover())})")
    sys.exit(run(chosen))
