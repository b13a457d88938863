#!/usr/bin/env python3
"""Runs a command and prints its wall time and peak RSS (getrusage of children)."""
import resource, subprocess, sys, time

t = time.perf_counter()
rc = subprocess.call(sys.argv[1:])
s = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(f"command took {s:.2f}s, peak RSS {rss:.0f} MiB, exit {rc}")
sys.exit(rc)
