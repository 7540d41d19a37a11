"""Command line: ``python -m workbench {zoo,report,bench}``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main"]


def _zoo_collect(args: argparse.Namespace) -> int:
    from .atomic_io import read_json
    from .presets import load_preset
    from .zoo import ZooConfig, collect

    if args.config:
        if not args.root:
            print("--config needs --root (the zoo directory)", file=sys.stderr)
            return 2
        jobs = [(ZooConfig.from_dict(read_json(args.config)), Path(args.root))]
    else:
        p = load_preset(args.preset)
        run = Path(args.run_dir or f"runs/{args.preset}")
        keys = args.zoo or list(p.zoos)
        jobs = [(p.zoo(k), run / "zoos" / k) for k in keys]
    for cfg, root in jobs:
        zoo = collect(cfg, root, progress=not args.quiet)
        print(json.dumps({"root": str(root), **zoo.describe()}))
    return 0


def _report(args: argparse.Namespace) -> int:
    from .report import ReportError, run_report

    try:
        out = run_report(args.preset, out_dir=args.out, run_dir=args.run_dir, seed=args.seed, device=args.device,
                         only=args.only, html=not args.no_html)
    except ReportError as e:
        print(f"report failed: {e}", file=sys.stderr)
        return 1
    print(f"report written to {out}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .bench import run_benchmark

    result = run_benchmark(args.name, args.preset)
    print(json.dumps(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m workbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    zoo = sub.add_parser("zoo", help="zoo collection")
    zsub = zoo.add_subparsers(dest="zoo_command", required=True)
    c = zsub.add_parser("collect", help="collect (or resume) the zoos of a preset, or one zoo from a config JSON")
    c.add_argument("--preset", default="default")
    c.add_argument("--zoo", action="append", help="only this zoo of the preset (repeatable)")
    c.add_argument("--run-dir", default=None, help="defaults to runs/<preset>; zoos go to <run-dir>/zoos/<key>")
    c.add_argument("--config", default=None, help="a ZooConfig JSON file instead of a preset")
    c.add_argument("--root", default=None, help="zoo directory for --config")
    c.add_argument("--quiet", action="store_true")
    c.set_defaults(func=_zoo_collect)

    r = sub.add_parser("report", help="execute the notebooks into reports/<preset>/")
    r.add_argument("--preset", default="default")
    r.add_argument("--out", default=None)
    r.add_argument("--run-dir", default=None)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--device", default="cpu")
    r.add_argument("--only", action="append", help="only notebooks whose name starts with this (repeatable)")
    r.add_argument("--no-html", action="store_true")
    r.set_defaults(func=_report)

    b = sub.add_parser("bench", help="run a benchmark; the last stdout line is one JSON object")
    b.add_argument("name")
    b.add_argument("--preset", default="default")
    b.set_defaults(func=_bench)

    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
