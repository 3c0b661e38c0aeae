"""Every ```python block of README.md and docs/*.md runs on its own (issue 13, "Docs that run").

Blocks are extracted from the fences and executed one by one in a fresh namespace with a temporary
working directory; a failure names the file and the line of the block (tracebacks carry the file's own
line numbers). The fence's info string may carry tags after ``python``:

* ``mindspore``: needs MindSpore; run in a subprocess, skipped only where MindSpore is not installed
  and ``ASCEND_ATTN_REQUIRE_MINDSPORE`` is not ``1`` (CI sets it: the block must run there);
* ``isolated``: run in a subprocess of its own (process groups, forked workers, global state).

Untagged blocks run in this process (imports are already paid for), each in a new ``__main__``
namespace, so a name defined by an earlier block is not visible to a later one.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TAGS = {"mindspore", "isolated"}
FENCE = re.compile(r"^```python(?P<info>[^\n`]*)$")
SUBPROCESS_TIMEOUT_S = 300


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the first code line (the one after the fence)
    tags: frozenset
    code: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    def padded(self) -> str:
        """The code preceded by blank lines, so that tracebacks show the document's line numbers."""
        return "\n" * (self.line - 1) + self.code


def extract_blocks(path: Path) -> list[Block]:
    """The ```python blocks of a Markdown file, in order. An unclosed fence is an error."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        start = i + 1
        end = start
        while end < len(lines) and lines[end].rstrip() != "```":
            end += 1
        if end == len(lines):
            raise ValueError(f"{path.name}:{i + 1}: ```python fence is never closed")
        tags = frozenset(match.group("info").split())
        blocks.append(Block(path, start + 1, tags, "\n".join(lines[start:end]) + "\n"))
        i = end + 1
    return blocks


ALL_BLOCKS = [block for doc in DOCUMENTS for block in extract_blocks(doc)]


def test_extraction_finds_the_examples():
    """The extractor sees the README's examples (a broken fence pattern would silently test nothing)."""
    readme = [b for b in ALL_BLOCKS if b.path.name == "README.md"]
    assert len(readme) >= 8, [b.where for b in readme]
    assert any("mindspore" in b.tags for b in readme)
    assert any("ring_flash_attn_varlen_func" in b.code for b in readme)
    for block in ALL_BLOCKS:
        assert block.tags <= TAGS, f"{block.where}: unknown tags {sorted(block.tags - TAGS)} (known: {sorted(TAGS)})"
        assert block.code.strip(), f"{block.where}: empty block"


def test_extract_blocks_reports_lines(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("# t\n\n```python\nx = 1\n```\n\ntext\n```python mindspore\ny = 2\n```\n```bash\nls\n```\n")
    blocks = extract_blocks(doc)
    assert [(b.line, b.tags, b.code) for b in blocks] == [
        (4, frozenset(), "x = 1\n"), (9, frozenset({"mindspore"}), "y = 2\n")]
    doc.write_text("```python\nx = 1\n")
    with pytest.raises(ValueError, match="never closed"):
        extract_blocks(doc)


def _mindspore_missing() -> bool:
    return importlib.util.find_spec("mindspore") is None


def _run_in_subprocess(block: Block, cwd: Path) -> None:
    script = cwd / f"block_{block.path.stem}_{block.line}.py"
    script.write_text(block.padded(), encoding="utf-8")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    # A session of its own: on a timeout the whole group goes, workers the block forked included.
    proc = subprocess.Popen([sys.executable, str(script)], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=SUBPROCESS_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"{block.where}: block did not finish within {SUBPROCESS_TIMEOUT_S} s\n{stderr[-6000:]}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # workers left behind by a block that exited
    if proc.returncode != 0:
        tail = (stdout[-2000:] + stderr[-6000:]).replace(str(script), str(block.path))
        pytest.fail(f"{block.where}: block failed with exit code {proc.returncode}\n{tail}")


def run_block(block: Block, cwd: Path, monkeypatch) -> None:
    """Run one block in ``cwd``; any failure raises (pytest's Failed or AssertionError) naming its line."""
    if block.tags & {"mindspore", "isolated"}:
        _run_in_subprocess(block, cwd)
        return
    monkeypatch.chdir(cwd)
    code = compile(block.padded(), str(block.path), "exec")
    try:
        exec(code, {"__name__": "__main__"})
    except Exception as exc:  # noqa: BLE001 - any failure of the example is the finding
        raise AssertionError(f"{block.where}: block failed: {type(exc).__name__}: {exc}") from exc


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=[b.where for b in ALL_BLOCKS])
def test_block_runs(block: Block, tmp_path, monkeypatch):
    if "mindspore" in block.tags and _mindspore_missing():
        if os.environ.get("ASCEND_ATTN_REQUIRE_MINDSPORE") == "1":
            pytest.fail(f"{block.where}: MindSpore is required (ASCEND_ATTN_REQUIRE_MINDSPORE=1) but not installed")
        pytest.skip("MindSpore is not installed (pip install -e '.[mindspore]')")
    run_block(block, tmp_path, monkeypatch)


@pytest.mark.parametrize("tags", [frozenset(), frozenset({"isolated"})])
def test_a_broken_block_fails_with_its_line(tags, tmp_path, monkeypatch):
    """A block using a name defined elsewhere fails (not skips), and the failure names the document line."""
    block = Block(ROOT / "README.md", 7, tags, "x = 1\nprint(prev_out)\n")
    with pytest.raises((AssertionError, pytest.fail.Exception)) as info:
        run_block(block, tmp_path, monkeypatch)
    text = str(info.value) + "".join(str(c) for c in (info.value.__cause__,) if c is not None)
    assert "README.md:7" in text and "prev_out" in text
    if tags:
        assert 'line 8' in text  # the traceback of the subprocess carries the document's line
    else:
        assert info.value.__cause__.__traceback__.tb_next.tb_lineno == 8


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {github_anchor(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, flags=re.M)}


def test_relative_links_resolve():
    """Links between the documents point at files of the repository and at headings that exist
    (the README used to link to a specification outside the repository)."""
    assert github_anchor("7.5 int8 scenarios of the V2 interface") == "75-int8-scenarios-of-the-v2-interface"
    dead = []
    for doc in DOCUMENTS + [ROOT / "ARCHITECTURE.md"] + sorted((ROOT / "ops_kernels").rglob("README.md")):
        text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)
        text = re.sub(r"`[^`\n]*`", "", text)  # inline code: `operator[](offset)` is no link
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: not checked here
            file_part, _, anchor = target.partition("#")
            dest = (doc.parent / file_part).resolve() if file_part else doc
            if not dest.exists() or ROOT not in dest.parents and dest != ROOT:
                dead.append(f"{doc.relative_to(ROOT)}: {target} (no such file in the repository)")
            elif anchor and (dest.is_dir() or anchor not in _anchors(dest)):
                dead.append(f"{doc.relative_to(ROOT)}: {target} (no heading #{anchor})")
    assert not dead, "\n".join(dead)


def test_no_reference_to_the_specification_outside_the_repository():
    """Users cannot see ``shared/spec``: documents and docstrings cite docs/ instead."""
    sources = DOCUMENTS + [ROOT / "ARCHITECTURE.md"] + sorted((ROOT / "ascend_attn").rglob("*.py"))
    hits = [f"{p.relative_to(ROOT)}:{n}" for p in sources
            for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if "shared/spec" in line]
    assert not hits, hits
