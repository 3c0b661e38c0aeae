"""Run the benchmark suite: ``python scripts/bench.py [--quick | --tiny] [--out DIR]`` (= ``ascend-attn bench``)."""
import sys

from ascend_attn.bench import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
