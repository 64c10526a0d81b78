"""mtkit's benchmarks: each module here with a `main()` prints speed or memory figures.

`make bench` (that is, `python -m bench`) runs them all; `python -m bench NAME ...`
runs the named ones. Benchmarks print figures and assert nothing about time.
"""
