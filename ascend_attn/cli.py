"""``ascend-attn`` command line: ``info``, ``demo`` and ``bench`` (``python -m ascend_attn`` too)."""
from __future__ import annotations

import argparse
import platform
import shutil
import sys
import textwrap
from importlib import metadata


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _width() -> int:
    """Terminal width for wrapping (at most 100 columns; 100 when not a terminal)."""
    return min(100, shutil.get_terminal_size((100, 24)).columns)


def _wrapped(label: str, text: str, indent: int, out) -> None:
    """``label`` padded to ``indent`` columns, then ``text`` wrapped to the terminal, continuation
    lines indented by ``indent``."""
    print(textwrap.fill(text, width=_width(), initial_indent=label.ljust(indent), subsequent_indent=" " * indent,
                        break_on_hyphens=False), file=out)


def info(out=sys.stdout) -> int:
    """Versions, each backend's state (its reason stated once), and the backend each op gets per device."""
    from . import __version__, backends, native

    print(f"ascend_attn {__version__}", file=out)
    versions = " | ".join(f"{d} {_version(d)}" for d in ("numpy", "torch", "mindspore", "torch_npu"))
    _wrapped("", f"python {platform.python_version()} | {versions}", 0, out)
    print("\nBackends (priority order within each framework):", file=out)
    groups: dict[tuple[str, str], list[str]] = {}  # backends that share a reason are listed together
    for name, state, why in backends.report():
        groups.setdefault((state, why), []).append(name)
    width = max(len(name) for names in groups.values() for name in names) + 4
    for (state, why), names in groups.items():
        for name in names[:-1]:
            print(f"  {name},", file=out)
        _wrapped(f"  {names[-1]}", f"{state}: {why}", width, out)
    print("\nSelected backend per framework and device (reasons above):", file=out)
    targets = (("torch", "cpu"), ("torch", "npu"), ("mindspore", "CPU"), ("mindspore", "Ascend"))
    for framework, device in targets:
        chosen: dict[str, list[str]] = {}
        for op in backends.OPS:
            try:
                name = backends.select(framework, op, device)[0].name
            except backends.NoBackendError:
                name = "none"
            chosen.setdefault(name, []).append(op)
        parts = [f"{name} for {'all ops' if len(ops) == len(backends.OPS) else ', '.join(ops)}"
                 for name, ops in chosen.items()]
        _wrapped(f"  {framework} {device}:", "; ".join(parts), 20, out)
    if backends.probe_native_cpu() is None:
        features = [name for name, present in native.cpu_features().items() if present]
        _wrapped("\nCPU features detected: ", ", ".join(features) or "none (scalar code)", 23, out)
        _wrapped("FA matrix products: ", native.gemm_kind(), 20, out)
    pkg = backends.probe_kernel_package()
    _wrapped("\nCustom-op kernel package: ", "installed" if pkg is None else "not usable: " + pkg, 26, out)
    print("aclnn entry on Ascend per input class (the package kernel where it implements the input,\n"
          "else CANN's op):", file=out)
    from .aclnn import entry_report
    last_op = None
    for op, what, api, why in entry_report(pkg):
        if op != last_op:
            print(f"  {op}", file=out)
            last_op = op
        if pkg is not None and why.endswith(pkg):
            why = "package not usable, see above"  # the package's reason is stated once
        _wrapped(f"    {what}: ", f"{api} ({why})", 6, out)
    glue = backends.probe_npu_glue()
    _wrapped("NPU glue (ascend_attn._npu_ext): ", "built" if glue is None else "not usable: " + glue, 33, out)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="ascend-attn", description="Ascend fused attention operators on CPU, NPU and MindSpore: "
        "report the environment (info), check every op against float64 (demo), time the ops (bench).")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, usable backends and why others are not")
    demo = sub.add_parser("demo", help="run every op on realistic small shapes against the float64 reference")
    demo.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    demo.add_argument("--small", action="store_true", help="tiny shapes (seconds), for smoke tests")
    demo.add_argument("--threads", type=int, default=None, metavar="N",
                      help="torch CPU threads (default: torch's own choice)")
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
    return run_demo(seed=args.seed, small=args.small, threads=args.threads)


if __name__ == "__main__":
    raise SystemExit(main())
