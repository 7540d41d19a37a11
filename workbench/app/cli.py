"""Command line: ``python -m workbench {zoo,fit,report,bench}``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from workbench.app.bench import run_benchmark
from workbench.app.presets import is_preset_path, load_preset
from workbench.app.report import ReportError, run_report
from workbench.core.device import resolve_device
from workbench.core.paths import check_input_file, check_output_dir
from workbench.zoo import Zoo, ZooConfig, collect
from workbench.zoo.executors import EXECUTORS, executor_scope
from workbench.zoo.storage import repair_zoo

__all__ = ["main"]

EPILOG = """\
Arguments are checked before anything is written: a bad preset, zoo key, config or folder ends the command with
one line on stderr ("error: <what is wrong and the fix>") and a non-zero exit status, and no folder is created.
Set WORKBENCH_DEBUG=1 to see the full Python traceback of an error instead (for bug reports)."""


def _zoo_collect(args: argparse.Namespace) -> int:
    if args.config is not None:
        if args.root is None:
            raise ValueError("--config needs --root (the directory the zoo is collected into)")
        if args.zoo:
            raise ValueError("--zoo selects zoos of a preset; it cannot be combined with --config")
        if args.run_dir is not None:
            raise ValueError("--run-dir is for preset zoos; with --config the zoo goes to --root")
        path = check_input_file(args.config, "--config")
        root = check_output_dir(args.root, "--root")
        try:
            raw = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"--config {args.config} is not valid JSON ({e}); fix the file "
                             "(a ZooConfig as written by ZooConfig.to_dict)") from None
        cfg = ZooConfig.from_dict(raw, what=f"zoo config {args.config}")
        jobs = [(cfg, root)]
    else:
        if args.root is not None:
            raise ValueError("--root is the zoo directory for --config; with a preset use --run-dir")
        p = load_preset(args.preset)
        folder = p.name if is_preset_path(args.preset) else args.preset
        run = check_output_dir(args.run_dir, "--run-dir") or Path("runs") / folder
        keys = args.zoo or list(p.zoos)
        if not keys:
            raise ValueError(f"preset {args.preset!r} has no zoos to collect (section 'zoos' is empty)")
        jobs = [(p.zoo(k), run / "zoos" / k) for k in keys]  # every key is checked before the first collection
    resolve_device(args.device, name="--device")
    # a bad --executor/--address is refused here, before the first zoo is touched
    with executor_scope(args.executor, address=args.address) as executor:
        for cfg, root in jobs:
            zoo = collect(cfg, root, progress=not args.quiet, executor=executor, device=args.device)
            print(json.dumps({"root": str(root), **zoo.describe()}))
    return 0


def _zoo_repair(args: argparse.Namespace) -> int:
    report = repair_zoo(args.root)
    print(json.dumps(report))
    if report["members_to_recollect"]:
        print(f"moved aside {len(report['moved_aside'])} damaged shard(s) into quarantine/ (nothing deleted); "
              f"re-run the collection to restore members {report['members_to_recollect']}", file=sys.stderr)
    return 0


def _zoo_verify(args: argparse.Namespace) -> int:
    zoo = Zoo(args.root)  # raises ZooCorruptError naming every damaged or missing shard
    print(json.dumps({"root": str(args.root), "ok": True, "complete": zoo.complete, **zoo.describe()}))
    return 0


def _report(args: argparse.Namespace) -> int:
    resolve_device(args.device, name="--device")  # 'auto', or a device this machine has; named before any notebook runs
    out = run_report(args.preset, out_dir=args.out, run_dir=args.run_dir, seed=args.seed, device=args.device,
                     only=args.only, html=not args.no_html)
    print(f"report written to {out}")
    return 0


def _fit(args: argparse.Namespace) -> int:
    from workbench.app.fit import fit_preset_generator
    from workbench.core.data_parallel import process_group

    resolve_device(args.device, name="--device")
    load_preset(args.preset).zoo(args.zoo)  # an unknown preset or zoo key is named before anything is written
    check_output_dir(args.run_dir, "--run-dir")
    result = fit_preset_generator(args.preset, args.zoo, run_dir=args.run_dir, seed=args.seed, device=args.device,
                                  generator=args.generator, progress=not args.quiet, refit=args.refit)
    if process_group(resolve_device(args.device)).is_main:  # one result line per job, not one per process
        print(json.dumps(result))
    return 0


def _bench(args: argparse.Namespace) -> int:
    result = run_benchmark(args.name, args.preset, device=args.device)
    print(json.dumps(result))
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors on one line (``error: <prog>: <problem> (see <prog> --help)``), exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {self.prog}: {' '.join(message.split())} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m workbench", description=__doc__, epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    zoo = sub.add_parser("zoo", help="zoo collection", epilog=EPILOG,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    zsub = zoo.add_subparsers(dest="zoo_command", required=True)
    c = zsub.add_parser("collect", help="collect (or resume) the zoos of a preset, or one zoo from a config JSON",
                        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--preset", default="default", help="a bundled preset name or the path of a preset .json")
    c.add_argument("--zoo", action="append", help="only this zoo of the preset (repeatable)")
    c.add_argument("--run-dir", default=None, help="defaults to runs/<preset>; zoos go to <run-dir>/zoos/<key>")
    c.add_argument("--config", default=None, help="a ZooConfig JSON file instead of a preset")
    c.add_argument("--root", default=None, help="zoo directory for --config")
    c.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="where the seeds protocol's member chunks train: here, or as Ray tasks (needs "
                        "'workbench[distributed]'); dense protocols are one trajectory and always run here")
    c.add_argument("--address", default=None,
                   help="with --executor ray: an existing Ray cluster ('auto', 'host:6379', 'ray://host:10001'); "
                        "default: start a Ray on this machine for the collection")
    c.add_argument("--device", default="cpu", help="where members train: 'cpu', 'cuda', 'cuda:1' or 'auto'")
    c.add_argument("--quiet", action="store_true")
    c.set_defaults(func=_zoo_collect)
    v = zsub.add_parser("verify", help="check every shard of a zoo against its recorded checksum (changes nothing)")
    v.add_argument("root", help="the zoo directory")
    v.set_defaults(func=_zoo_verify)
    rp = zsub.add_parser("repair", help="move damaged shards aside (into quarantine/, never deleted) so that the "
                         "next `zoo collect` restores their members")
    rp.add_argument("root", help="the zoo directory")
    rp.set_defaults(func=_zoo_repair)

    r = sub.add_parser("report", help="execute the notebooks into reports/<preset>/", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("--preset", default="default", help="a bundled preset name or the path of a preset .json")
    r.add_argument("--out", default=None, help="defaults to reports/<preset>")
    r.add_argument("--run-dir", default=None, help="defaults to runs/<preset>")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--device", default="cpu")
    r.add_argument("--only", action="append", help="only notebooks whose name starts with this (repeatable)")
    r.add_argument("--no-html", action="store_true")
    r.set_defaults(func=_report)

    f = sub.add_parser("fit", help="fit (or resume) the p-diff generator of a preset zoo; data-parallel under "
                       "`accelerate launch`", epilog=EPILOG + """

Data-parallel (each process trains its share of every batch; same result as one process up to floating point):
  accelerate launch --multi_gpu --num_processes 2 -m workbench fit --preset ci --zoo mlp_dense   (2 CPU processes,
      gloo: --multi_gpu selects accelerate's torchrun launcher; its --cpu launcher needs MPI)
  accelerate launch --num_processes 4 -m workbench fit --preset default --zoo mlp_dense --device auto  (4 GPUs)""",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    f.add_argument("--preset", default="default", help="a bundled preset name or the path of a preset .json")
    f.add_argument("--zoo", required=True, help="the preset's zoo key (collected or resumed first)")
    f.add_argument("--run-dir", default=None, help="defaults to runs/<preset>; the generator goes to "
                   "<run-dir>/generators/pdiff/<zoo>")
    f.add_argument("--generator", default="pdiff", help="the preset's generator settings to use")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--device", default="cpu", help="'cpu', 'cuda', 'auto' (one GPU per process when launched)")
    f.add_argument("--refit", action="store_true", help="fit again (resuming checkpoints) even if it is saved")
    f.add_argument("--quiet", action="store_true")
    f.set_defaults(func=_fit)

    b = sub.add_parser("bench", help="run a benchmark; the last stdout line is one JSON object", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("name")
    b.add_argument("--preset", default="default", help="a bundled preset name or the path of a preset .json")
    b.add_argument("--device", default="cpu", help="where the benchmark's stages run: 'cpu', 'cuda' or 'auto' "
                   "(benchmarks of one system; zoo and robustness measure the CPU)")
    b.set_defaults(func=_bench)
    return parser


def _one_line(e: BaseException) -> str:
    """The message of an error as one line (a KeyError's message without the quotes ``str`` adds)."""
    msg = e.args[0] if isinstance(e, KeyError) and len(e.args) == 1 else str(e)
    msg = " ".join(str(msg).split())
    if isinstance(e, ReportError):
        return f"report failed: {msg}"
    if isinstance(e, (ValueError, KeyError, OSError)):
        return msg or type(e).__name__
    # not an input error we know: say what it was and how to see where it came from
    return f"{type(e).__name__}: {msg} (set WORKBENCH_DEBUG=1 to see the traceback)"


def main(argv: list[str] | None = None) -> int:
    """Entry point: one line on stderr and a non-zero exit status for any error (``WORKBENCH_DEBUG=1`` re-raises)."""
    args = _parser().parse_args(argv)
    debug = os.environ.get("WORKBENCH_DEBUG", "") not in ("", "0")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print("error: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as e:  # the CLI's promise: one line, never a traceback
        if debug:
            raise
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
