"""Benchmarks: each module here has `main(argv) -> int`; `python -m bench [NAME ...]` runs them."""
