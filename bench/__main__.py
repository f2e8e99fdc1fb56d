"""Run the benchmarks: `python -m bench` runs all of them, `python -m bench intake` one."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import bench


def names() -> list[str]:
    return sorted(
        m.name for m in pkgutil.iter_modules(bench.__path__) if not m.name.startswith("_")
    )


def run(argv: list[str]) -> int:
    wanted = [a for a in argv if not a.startswith("-")] or names()
    unknown = [n for n in wanted if n not in names()]
    if unknown:
        print(
            f"bench: unknown benchmark {unknown[0]!r}; have {', '.join(names())}", file=sys.stderr
        )
        return 2
    status = 0
    for name in wanted:
        print(f"== bench {name}", flush=True)
        module = importlib.import_module(f"bench.{name}")
        status |= int(module.main([a for a in argv if a.startswith("-")]))
    return status


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
