"""``python -m bench [micro|http|memory|invalidation|all]``: run the benchmarks and print their tables."""

import argparse
import os
import sys


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("which", nargs="?", default="all", choices=["all", "micro", "http", "memory", "invalidation"])
    parser.add_argument("--seconds", type=float, default=10.0, help="load duration per HTTP variant")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections of the load generator")
    parser.add_argument(
        "--peers-python",
        default=os.environ.get("BENCH_PEERS_PYTHON"),
        help="interpreter of a venv with fastapi-intelligent-cache 0.1.5 and fastapi-cache2 0.2.2 (peers)",
    )
    args = parser.parse_args()
    if args.which in ("all", "micro"):
        from bench import micro

        print("\n## In-process ASGI cost (no sockets)\n")
        micro.main()
    if args.which in ("all", "memory"):
        from bench import memory

        print("\n## Memory\n")
        memory.main()
    if args.which in ("all", "invalidation"):
        from bench import invalidation

        print("\n## Invalidation cost after one write\n")
        invalidation.main()
    if args.which in ("all", "http"):
        from bench import http

        print("\n## HTTP throughput (HIT path)\n")
        http.main(seconds=args.seconds, connections=args.connections, peers_python=args.peers_python)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
