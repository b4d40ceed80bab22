#!/usr/bin/env python3
"""What the kernel charges for a durable commit on this machine, with nothing else running.

A loop appends WAL-like frames (a 24-byte header and a 4 KiB page, two writes each, as SQLite's
WAL does) to a scratch file and syncs after each commit, paced or back to back, and reports the
CPU it spent per commit (user and system, from getrusage) and the fsync's latency percentiles.
It is the floor under kith's CPU per message at low rates, where every message is a commit of
its own and its flush must come before `sent` (docs/benchmarks.md, section 5).

    bench/fsync-floor.py [--dir DIR] [--commits N] [--interval-ms MS] [--frames F]

DIR should be on the disk the node's data directory is on (default: the bench directory,
$KITH_BENCH_DIR or /tmp/kith-bench).
"""
import argparse
import os
import resource
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=os.environ.get("KITH_BENCH_DIR", "/tmp/kith-bench"))
    parser.add_argument("--commits", type=int, default=2000)
    parser.add_argument("--interval-ms", type=float, default=5.0, help="0: back to back")
    parser.add_argument("--frames", type=int, default=1, help="frames written per commit")
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    path = os.path.join(args.dir, "fsync-floor.scratch")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    header, page = b"h" * 24, b"x" * 4096
    latencies, offset = [], 0
    interval = args.interval_ms / 1000
    before = resource.getrusage(resource.RUSAGE_SELF)
    next_start = time.monotonic()
    try:
        for _ in range(args.commits):
            started = time.monotonic()
            for _ in range(args.frames):
                os.pwrite(fd, header, offset)
                os.pwrite(fd, page, offset + len(header))
                offset += len(header) + len(page)
            os.fsync(fd)
            latencies.append((time.monotonic() - started) * 1000)
            if interval > 0:
                next_start += interval
                time.sleep(max(0.0, next_start - time.monotonic()))
    finally:
        os.close(fd)
        os.unlink(path)
    after = resource.getrusage(resource.RUSAGE_SELF)
    latencies.sort()

    def pct(q):
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))]

    per = 1e6 / args.commits
    print(
        f"{args.commits} commits of {args.frames} frame(s), "
        f"{'every %.1f ms' % args.interval_ms if interval > 0 else 'back to back'}: "
        f"user {(after.ru_utime - before.ru_utime) * per:.0f} us, "
        f"system {(after.ru_stime - before.ru_stime) * per:.0f} us per commit; "
        f"fsync p50 {pct(0.5):.2f} p99 {pct(0.99):.2f} p99.9 {pct(0.999):.2f} max {latencies[-1]:.2f} ms"
    )


if __name__ == "__main__":
    main()
