"""Run the benchmarks: `python -m bench` runs all, `python -m bench intake --alerts 2000` one."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import bench

NOT_BENCHMARKS = {"common", "ceiling_server"}


def names() -> list[str]:
    found = (m.name for m in pkgutil.iter_modules(bench.__path__))
    return sorted(n for n in found if not n.startswith("_") and n not in NOT_BENCHMARKS)


def run(argv: list[str]) -> int:
    split = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    wanted, options = argv[:split] or names(), argv[split:]
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
        status |= int(module.main(options))
    return status


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
