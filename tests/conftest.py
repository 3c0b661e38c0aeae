import os
import shutil
import tempfile

import numpy as np
import pytest


def pytest_configure(config):
    # MindSpore writes rank_0/om/analyze_fail.ir into the working directory whenever a GRAPH_MODE
    # compile fails (the constraint tests do that on purpose); tests write only to temporary folders.
    if "MS_OM_PATH" not in os.environ:
        config._ms_om_path = os.environ["MS_OM_PATH"] = tempfile.mkdtemp(prefix="ascend_attn_ms_om_")
    # torch.ops.ascend_attn.* exist once the torch frontend is imported (ascend_attn loads it lazily).
    import ascend_attn.torch_ops  # noqa: F401

    # CI sets this so that a missing MindSpore fails loudly instead of skipping its tests.
    if os.environ.get("ASCEND_ATTN_REQUIRE_MINDSPORE") == "1":
        import mindspore  # noqa: F401


def pytest_unconfigure(config):
    # the folder made above (not one the caller set): removed with whatever MindSpore wrote there
    path = getattr(config, "_ms_om_path", None)
    if path:
        shutil.rmtree(path, ignore_errors=True)
        os.environ.pop("MS_OM_PATH", None)


def ulp(values: np.ndarray, dtype_name: str) -> np.ndarray:
    """Spacing of the floating-point grid of ``dtype_name`` at ``values`` (float64)."""
    mantissa = {"float16": 10, "bfloat16": 7, "float32": 23}[dtype_name]
    min_exp = {"float16": -14, "bfloat16": -126, "float32": -126}[dtype_name]
    mag = np.maximum(np.abs(values), np.finfo(np.float64).tiny)
    exp = np.maximum(np.floor(np.log2(mag)), min_exp)
    return np.exp2(exp - mantissa)


@pytest.fixture
def ulp_of():
    return ulp


@pytest.fixture(params=["native", "eager"])
def cpu_path(request):
    """Run the test once on each CPU kernel path (ascend_attn.native): the native C++ kernels,
    then the device-generic eager torch code. Test modules opt in with
    ``pytestmark = pytest.mark.usefixtures("cpu_path")``; ops without a native kernel run eager
    both times, so the parametrisation is harmless for them."""
    from ascend_attn import native
    if request.param == "native" and native.unavailable_reason() is not None:
        pytest.fail(f"the native CPU kernels must build here: {native.unavailable_reason()}")
    with native.forced(request.param):
        yield request.param
