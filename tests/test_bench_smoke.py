"""``ascend-attn bench --tiny``: runs end to end and writes its files. No timing assertions."""
import json
import subprocess
import sys


def test_bench_tiny_writes_results_for_every_group(tmp_path):
    out = tmp_path / "bench"
    result = subprocess.run([sys.executable, "-m", "ascend_attn", "bench", "--tiny", "--out", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "bench [" in result.stderr  # progress display
    for name in ("results.md", "results.json", "memory_growth.md", "memory_growth.json", "memory_growth.png"):
        assert (out / name).is_file(), name
    assert (out / "memory_growth.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "results.md").read_text()
    assert table in result.stdout or table.strip() in result.stdout  # the table is printed at the end
    for group in ("FA forward", "FA fwd+bwd", "IFA decode", "RAU", "Memory growth"):
        assert f"## {group}" in table, group
    assert "## Targets" in table
    data = json.loads((out / "results.json").read_text())
    assert {row["group"] for row in data["rows"]} >= {"FA forward", "FA fwd+bwd", "IFA decode", "RAU",
                                                      "Memory growth"}
    assert all(t["result"] in ("PASS", "MISS", "n/a") for t in data["targets"])
    impls = {row["impl"] for row in data["rows"]}
    assert {"ours", "eager", "sdpa_loop", "sdpa_padded", "naive", "cache_copy", "copy", "sdpa"} <= impls
    assert len(data["memory_growth"]) >= 2
