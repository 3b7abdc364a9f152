#!/usr/bin/env python3
"""The disk's own fsync latency, without Clientele: what any durable commit
on it waits for. Writes COUNT blocks of SIZE bytes, each followed by an
fsync and a pause, once appending (as the WAL grows) and once rewriting
the same 2 MB (as the WAL does after it restarts), and prints the fsync
latency percentiles of each.

    bench/fsync.py [directory=.] [count=2000] [size_kib=40] [pause_ms=3]

A group commit shares each fsync among every delivery waiting for it, so
one slow fsync in a thousand is the p99 of every delivery in flight then.
"""

import os
import sys
import time


def probe(path, count, size, pause, append):
    block = b"x" * size
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        times = []
        for i in range(count):
            offset = i * size if append else (i % (2 * 1024 * 1024 // size)) * size
            os.pwrite(fd, block, offset)
            start = time.perf_counter()
            os.fsync(fd)
            times.append((time.perf_counter() - start) * 1000)
            time.sleep(pause)
    finally:
        os.close(fd)
        os.unlink(path)
    times.sort()
    at = lambda q: times[min(len(times) - 1, int(q * len(times)))]
    slow = sum(1 for t in times if t > 10)
    return (
        f"p50 {at(0.5):.2f}  p90 {at(0.9):.2f}  p99 {at(0.99):.2f}  p99.9 {at(0.999):.2f}"
        f"  max {times[-1]:.2f} ms; {slow} over 10 ms"
    )


def main():
    directory = sys.argv[1] if len(sys.argv) > 1 else "."
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    size = int(sys.argv[3]) * 1024 if len(sys.argv) > 3 else 40 * 1024
    pause = float(sys.argv[4]) / 1000 if len(sys.argv) > 4 else 0.003
    path = os.path.join(directory, f".clientele-fsync-probe-{os.getpid()}")
    print(f"{count} fsyncs of {size // 1024} KiB writes in {os.path.abspath(directory)}")
    print("appending: ", probe(path, count, size, pause, append=True))
    print("rewriting: ", probe(path, count, size, pause, append=False))


if __name__ == "__main__":
    main()
