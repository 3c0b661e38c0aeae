"""The command line: info explains the backends once each, in lines that fit a terminal; demo runs,
checks itself and prints a table that fits 100 columns; every option is documented."""
import argparse
import re
import subprocess
import sys

HIDE_MINDSPORE = ("import sys, importlib.util as u; sys.modules['mindspore'] = None; real = u.find_spec; "
                  "u.find_spec = lambda n, *a: None if n == 'mindspore' else real(n, *a); ")


def run(*args, prelude=""):
    command = [sys.executable, "-c", prelude + "from ascend_attn.cli import main; raise SystemExit(main())", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def test_info_reports_backends_and_reasons():
    result = run("info")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    for name in ("torch_npu.kernels", "torch.fallback", "torch.cpu_native", "mindspore.fallback", "mindspore.native"):
        assert name in text
    assert "torch_npu is not installed" in text  # why the NPU path is not usable here
    assert "torch cpu:" in text and "CPU features detected:" in text
    assert "Custom-op kernel package" in text and "NPU glue" in text
    assert max(len(line) for line in text.splitlines()) <= 100


def test_info_states_each_reason_once():
    result = run("info", prelude=HIDE_MINDSPORE)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("mindspore is not installed") == 1
    assert re.search(r"mindspore CPU: +none for all ops", result.stdout)
    assert max(len(line) for line in result.stdout.splitlines()) <= 100


def test_every_option_has_help_and_no_markup():
    from ascend_attn import cli
    parser_holder = {}
    real_parse = argparse.ArgumentParser.parse_args

    def capture(self, args=None, namespace=None):
        parser_holder.setdefault("parser", self)
        return real_parse(self, ["info"], namespace)
    argparse.ArgumentParser.parse_args = capture
    try:
        cli.main(["info"])
    finally:
        argparse.ArgumentParser.parse_args = real_parse
    parser = parser_holder["parser"]
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help, f"{name} {action.option_strings or action.dest} has no help text"
        assert "``" not in sub.format_help()
    assert "``" not in parser.format_help()


def test_demo_small_runs_every_section_within_tolerance():
    result = run("demo", "--small", "--threads", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "ring_attention_update" in out and "self_attention" in out
    assert "25 of 25 results within their limit" in out and "1 threads" in out
    assert max(len(line) for line in out.splitlines()) <= 100
    assert "Warning" not in result.stderr  # nothing leaks onto the progress bar
    assert "demo:" in result.stderr and "ATB SelfAttention" in result.stderr  # progress names the running step


def test_demo_fails_when_a_result_is_out_of_tolerance(monkeypatch, capsys):
    from ascend_attn import demo
    monkeypatch.setattr(demo, "DTYPE_TOL", {"float32": 0.0, "bfloat16": 0.0, "float16": 0.0})
    assert demo.run_demo(small=True) == 1


def test_demo_table_shows_how_much_of_each_limit_is_used():
    from ascend_attn.demo import format_results
    lines = format_results([("incre_flash_attention", "scenario C (err in int8 steps)", "int8", 1.0, 1.0, 2.0),
                            ("ring_attention_update", "SBH", "float32", 2e-7, 1e-5, 0.5)])
    assert any("<= 1 steps" in line and "100%" in line for line in lines)
    assert any("<= 1e-05 abs" in line and "2%" in line for line in lines)
