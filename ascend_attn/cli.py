"""``ascend-attn`` command line: ``info``, ``demo`` and ``bench`` (``python -m ascend_attn`` too)."""
from __future__ import annotations

import argparse
import platform
import sys
from importlib import metadata


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def info(out=sys.stdout) -> int:
    from . import __version__, backends

    print(f"ascend_attn {__version__}", file=out)
    versions = " | ".join(f"{d} {_version(d)}" for d in ("numpy", "torch", "mindspore", "torch_npu"))
    print(f"python {platform.python_version()} | {versions}", file=out)
    print("\nBackends (priority order within each framework):", file=out)
    rows = backends.report()
    width = max(len(r[0]) for r in rows)
    for name, state, why in rows:
        print(f"  {name:<{width}}  {state:<10}  {why}", file=out)
    print("\nSelected backend per op and device:", file=out)
    targets = (("torch", "cpu"), ("torch", "npu"), ("mindspore", "CPU"), ("mindspore", "Ascend"))
    for op in backends.OPS:
        print(f"  {op}:", file=out)
        for framework, device in targets:
            try:
                chosen, _ = backends.select(framework, op, device)
                text = chosen.name
            except backends.NoBackendError as exc:
                text = f"none ({exc})"
            print(f"    {framework:<9} {device:<6} -> {text}", file=out)
    pkg = backends.probe_kernel_package()
    print(f"\nCustom-op kernel package ({backends.VENDOR_NAME}): {'installed' if pkg is None else 'not usable: ' + pkg}",
          file=out)
    print("aclnn entry on Ascend per input class (package kernel where it implements the input, else CANN's op):",
          file=out)
    from .aclnn import entry_report
    for op, what, api, why in entry_report(pkg):
        print(f"  {op:<38} {what:<40} -> {api}  ({why})", file=out)
    glue = backends.probe_npu_glue()
    print(f"NPU glue extension (ascend_attn._npu_ext): {'built' if glue is None else 'not usable: ' + glue}", file=out)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="ascend-attn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, usable backends and why others are not")
    demo = sub.add_parser("demo", help="run every op on realistic small shapes against the float64 reference")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--small", action="store_true", help="tiny shapes (seconds), for smoke tests")
    bench = sub.add_parser("bench", help="time and memory of the ops against torch alternatives (ratios, targets)")
    from .bench import add_arguments
    add_arguments(bench)
    args = parser.parse_args(argv)
    if args.command == "info":
        return info()
    if args.command == "bench":
        from .bench import main_from_args
        return main_from_args(args)
    from .demo import run_demo
    return run_demo(seed=args.seed, small=args.small)


if __name__ == "__main__":
    raise SystemExit(main())
