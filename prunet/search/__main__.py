"""``python -m prunet.search run|resume ...`` — the entry point torchrun starts once per process:

    torchrun --nproc-per-node 2 -m prunet.search run --space proxy-small --data fashion-mnist ...
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from prunet._cli_search import add_search_commands

    parser = argparse.ArgumentParser(prog="python -m prunet.search")
    sub = parser.add_subparsers(dest="command", required=True)
    add_search_commands(sub)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(["search", *argv])
    try:
        return int(args.func(args) or 0)
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
