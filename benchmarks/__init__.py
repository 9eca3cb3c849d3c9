"""budgetwarden's benchmarks: what the guard costs and what it saves, measured side by side.

Run ``python -m benchmarks`` (``--quick`` for a smoke run, ``--only NAME`` for one part).
"""
