#!/usr/bin/env python3
"""Copies standard input to LOG, each line prefixed with its arrival time.

    xl -vvv remus ... 2>&1 | python3 /mnt/lab/stamp.py LOG

`xl -vvv` logs no times; lab/bench.py derives `xl remus`'s per-checkpoint
pause from when libxl's and libxc's lines arrive here (Unix nanoseconds,
the clock of xl-kemari's --events). xl writes its log to an unbuffered
stderr, so a line arrives when it is written.
"""
import os
import sys
import time


def main():
    out = open(sys.argv[1], "ab", buffering=0)
    inp = sys.stdin.buffer
    while True:
        line = inp.readline()
        if not line:
            return 0
        out.write(b"%d " % time.time_ns() + line)


if __name__ == "__main__":
    sys.exit(main())
