"""The command line: info explains the backends, demo runs and checks itself."""
import subprocess
import sys


def run(*args):
    return subprocess.run([sys.executable, "-m", "ascend_attn", *args], capture_output=True, text=True, timeout=600)


def test_info_reports_backends_and_reasons():
    result = run("info")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    for name in ("torch_npu.kernels", "torch.fallback", "mindspore.fallback", "mindspore.native"):
        assert name in text
    assert "torch_npu is not installed" in text  # why the NPU path is not usable here
    assert "ring_attention_update" in text and "torch     cpu    -> torch.fallback" in text
    assert "Custom-op kernel package" in text and "NPU glue extension" in text
    assert "incre_flash_attention" in text and "flash_attention_unpadding_score_grad" in text


def test_demo_small_runs_every_section_within_tolerance():
    result = run("demo", "--small")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ring_attention_update" in result.stdout
    assert "results within tolerance" in result.stdout
    assert "demo [" in result.stderr  # progress bar


def test_demo_fails_when_a_result_is_out_of_tolerance(monkeypatch, capsys):
    from ascend_attn import demo
    monkeypatch.setattr(demo, "DTYPE_TOL", {"float32": 0.0, "bfloat16": 0.0, "float16": 0.0})
    assert demo.run_demo(small=True) == 1
