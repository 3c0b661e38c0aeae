"""Build the NPU glue extension ``ascend_attn._npu_ext`` (ascend_attn/csrc/npu_ops.cpp).

Needs torch_npu (with its op-plugin headers) and a CANN toolkit (ASCEND_HOME_PATH), and the
ascend_attn custom-op package installed for the FA grad / IFA ops (ops_kernels/build.sh). Run:

    source <cann>/set_env.sh && python scripts/build_npu_ext.py

Without them it says what is missing and exits 1; the package works without the extension
(every op runs its CPU / device-generic fallback).
"""
import importlib.util
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def missing() -> list[str]:
    why = []
    if not os.environ.get("ASCEND_HOME_PATH"):
        why.append("ASCEND_HOME_PATH is unset (source <cann>/ascend-toolkit/set_env.sh)")
    if importlib.util.find_spec("torch_npu") is None:
        why.append("torch_npu is not installed (pip install 'ascend_attn[npu]')")
    return why


def main() -> int:
    why = missing()
    if why:
        print("cannot build the NPU glue extension: " + "; ".join(why), file=sys.stderr)
        return 1
    import torch_npu
    from torch.utils.cpp_extension import load
    cann = Path(os.environ["ASCEND_HOME_PATH"])
    npu_root = Path(torch_npu.__file__).parent
    load(name="_npu_ext", sources=[str(ROOT / "ascend_attn" / "csrc" / "npu_ops.cpp")],
         extra_include_paths=[str(npu_root / "include"), str(npu_root / "include" / "third_party" / "acl" / "inc"),
                              str(cann / "include")],
         extra_ldflags=[f"-L{npu_root / 'lib'}", "-ltorch_npu", f"-L{cann / 'lib64'}", "-lascendcl", "-lnnopbase",
                        "-lopapi"],
         build_directory=str(ROOT / "ascend_attn"), verbose=True)
    print("built ascend_attn/_npu_ext")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
