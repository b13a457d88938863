#!/usr/bin/env python3
"""Runs a command and prints its wall time and peak RSS (getrusage of
children), and the peak of its anonymous memory (RssAnon, sampled every
20 ms from /proc): a mapped file's pages count in RSS but are the page
cache's, given back under pressure; anonymous memory is what the process
itself holds."""
import resource, subprocess, sys, threading, time


def rss_anon_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


t = time.perf_counter()
p = subprocess.Popen(sys.argv[1:])
peak_anon = 0


def sample():
    global peak_anon
    while p.poll() is None:
        peak_anon = max(peak_anon, rss_anon_kib(p.pid))
        time.sleep(0.02)


watcher = threading.Thread(target=sample, daemon=True)
watcher.start()
rc = p.wait()
watcher.join()
s = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(f"command took {s:.2f}s, peak RSS {rss:.0f} MiB (anonymous {peak_anon / 1024:.0f} MiB), exit {rc}")
sys.exit(rc)
