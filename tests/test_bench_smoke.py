"""``ascend-attn bench --tiny``: runs end to end and writes its files. No timing assertions."""
import json
import subprocess
import sys


def test_bench_tiny_writes_results_for_every_group(tmp_path):
    out = tmp_path / "bench"
    result = subprocess.run([sys.executable, "-m", "ascend_attn", "bench", "--tiny", "--out", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "bench:" in result.stderr  # progress display (tqdm)
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
    assert all(t["result"] in ("PASS", "MISS", "UNSTABLE", "n/a") for t in data["targets"])
    assert all("spread" in row for row in data["rows"])
    impls = {row["impl"] for row in data["rows"]}
    assert {"ours", "eager", "sdpa_loop", "sdpa_padded", "naive", "cache_copy", "copy", "sdpa",
            "ours_full"} <= impls
    # the full-mask runs of the causal / full target are timed inside the causal sets only
    assert all(row["causal"] for row in data["rows"] if row["impl"] == "ours_full")
    assert len(data["memory_growth"]) >= 2


def test_only_one_group_prints_no_empty_tables(tmp_path):
    out = tmp_path / "bench"
    result = subprocess.run([sys.executable, "-m", "ascend_attn", "bench", "--tiny", "--only", "RAU", "--out", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    table = (out / "results.md").read_text()
    assert "## RAU" in table
    for group in ("FA forward", "FA fwd+bwd", "IFA decode", "Memory growth"):
        assert f"## {group}" not in table, group
    assert "not measured in this run" in table and "| not measured |" not in table


def test_spread_and_unstable_targets():
    from ascend_attn import bench
    assert bench.run_spread([1.0]) is None
    assert abs(bench.run_spread([1.0, 1.1, 1.2]) - 0.2 / 1.1) < 1e-12
    assert bench.run_spread([1.0, 1.0, 1.0, 1.0, 25.0]) == 0.0  # one outlier among five: IQR ignores it
    row = dict(group="RAU", case="SBH fp32", time_s=2.0, runs=3, peak_extra_mib=None, note="")
    rows = [dict(row, impl="ours", spread=0.9), dict(row, impl="copy", time_s=1.0, spread=0.01)]
    targets = {t[0]: t[2] for t in bench.evaluate_targets(rows, [], "tiny")}
    assert targets["RAU <= 1.2x copying its inputs into preallocated buffers"] == "UNSTABLE"
    rows[0]["spread"] = 0.05
    targets = {t[0]: t[2] for t in bench.evaluate_targets(rows, [], "tiny")}
    assert targets["RAU <= 1.2x copying its inputs into preallocated buffers"] == "MISS"


def test_causal_over_full_comes_from_the_causal_set_when_it_has_full_runs():
    from ascend_attn import bench
    target = "FA causal <= 0.55x full, same shape"
    base = dict(group="FA forward", runs=3, peak_extra_mib=None, note="", spread=0.01, test_size=False)
    causal = dict(base, case="float32 causal T=4k", causal=True)
    full = dict(base, case="float32 full T=4k", causal=False)
    # the full set ran at another moment (slower machine): 1.0 / 2.4 would pass
    rows = [dict(causal, impl="ours", time_s=1.0), dict(full, impl="ours", time_s=2.4)]
    assert {t[0]: t[2] for t in bench.evaluate_targets(rows, [], "tiny")}[target] == "PASS"
    # interleaved full-mask runs of the causal set take precedence: 1.0 / 1.6 misses
    rows.append(dict(causal, impl="ours_full", time_s=1.6))
    verdicts = {t[0]: (t[1], t[2]) for t in bench.evaluate_targets(rows, [], "tiny")}
    assert verdicts[target][1] == "MISS" and "0.62" in verdicts[target][0]


def test_target_ratios_pair_the_runs_of_each_round():
    from ascend_attn import bench
    target = "RAU <= 1.2x copying its inputs into preallocated buffers"
    row = dict(group="RAU", case="SBH fp32", runs=3, peak_extra_mib=None, note="", spread=0.1)
    # the machine slowed down in round 2 for both candidates: medians 2.0 / 1.5 = 1.33 would miss,
    # the rounds' own ratios are 0.91, 0.91, 1.33 (median 0.91)
    rows = [dict(row, impl="ours", time_s=2.0, round_times=[1.0, 3.0, 2.0]),
            dict(row, impl="copy", time_s=1.5, round_times=[1.1, 3.3, 1.5])]
    verdicts = {t[0]: (t[1], t[2]) for t in bench.evaluate_targets(rows, [], "tiny")}
    assert verdicts[target][1] == "PASS" and "0.91" in verdicts[target][0]
    # rows of different sets (another case) fall back to the ratio of their medians
    assert bench.paired_ratio(rows[0], dict(rows[1], case="other")) == 2.0 / 1.5
