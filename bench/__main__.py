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


def machine() -> str:
    """The CPU model, its core count and its vector extensions, so a figure names its CPU."""
    import os
    import platform

    info = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as file:
            first_cpu = file.read().split("\n\n")[0]
        info = {
            k.strip(): v.strip()
            for k, _, v in (line.partition(":") for line in first_cpu.splitlines())
        }
    except OSError:  # not Linux: platform's answer only
        pass
    model = info.get("model name") or platform.processor() or platform.machine()
    flags = set(info.get("flags", "").split())
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile")
    vector = " ".join(flag for flag in wanted if flag in flags) or "no AVX2 reported"
    return f"{model}, {os.cpu_count()} CPUs, {vector}"


def run(names: list[str]) -> int:
    print(f"machine: {machine()}", flush=True)
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
    # `python -m bench NAME --option ...`: options after the names go to NAME's main().
    args = sys.argv[1:]
    first_option = next((i for i, a in enumerate(args) if a.startswith("-")), len(args))
    chosen, sys.argv = args[:first_option] or discover(), [sys.argv[0], *args[first_option:]]
    unknown = sorted(set(chosen) - set(discover()))
    if unknown:
        sys.exit(f"no such benchmark: {', '.join(unknown)} (have: {', '.join(discover())})")
    sys.exit(run(chosen))
