"""Every Python block of docs/fabric.md runs as shown, and the page's claims hold.

The page marks its blocks with HTML comments (invisible when rendered):

- `<!-- snippet: NAME -->`: the next (python) block is a script; each runs as `python NAME.py` in
  a scratch folder NAME/ of its own and must exit 0;
- `<!-- output: NAME -->`: every line of the next block appears in what snippet NAME printed.

Every python block must carry a snippet marker. The checks: the raw loop and the Fabric loop save
bit-identical weights, and the Fabric loop differs from the raw one in exactly its five marked lines.
"""

from __future__ import annotations

import difflib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fulmen import alias

DOC = Path(__file__).resolve().parents[1] / "docs" / "fabric.md"
MARKER = re.compile(r"<!-- (snippet|output): (\w+) -->")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def _parse(text: str) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """The snippets (name -> code) in page order, the expected outputs, and unmarked python blocks."""
    snippets: dict[str, str] = {}
    outputs: dict[str, str] = {}
    unmarked: list[str] = []
    position = 0
    for fence in FENCE.finditer(text):
        markers = list(MARKER.finditer(text, position, fence.start()))
        position = fence.end()
        if not markers:
            if fence.group(1) == "python":
                unmarked.append(fence.group(2).splitlines()[0])
            continue
        kind, name = markers[-1].groups()
        (snippets if kind == "snippet" else outputs)[name] = fence.group(2)
    return snippets, outputs, unmarked


SNIPPETS, OUTPUTS, UNMARKED = _parse(DOC.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> tuple[Path, dict[str, subprocess.CompletedProcess]]:
    """Every snippet run once, in page order, each in a folder of its own."""
    folder = tmp_path_factory.mktemp("fabric_docs")
    env = {k: v for k, v in os.environ.items() if k != alias.ENV_VAR}
    env["OMP_NUM_THREADS"] = "1"
    results = {}
    for name, code in SNIPPETS.items():
        (folder / name).mkdir()
        (folder / name / f"{name}.py").write_text(code)
        results[name] = subprocess.run([sys.executable, f"{name}.py"], cwd=folder / name, env=env, capture_output=True,
                                       text=True, timeout=300, stdin=subprocess.DEVNULL)
    return folder, results


def test_every_python_block_is_a_snippet_and_every_output_has_one():
    assert UNMARKED == []
    assert list(SNIPPETS) == ["raw", "fabric", "ddp", "precision", "resume", "loggers"]
    assert set(OUTPUTS) <= set(SNIPPETS)


def test_every_snippet_runs_and_prints_what_the_page_shows(ran):
    _, results = ran
    for name, done in results.items():
        assert done.returncode == 0, f"{name}: exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    for name, expected in OUTPUTS.items():
        for line in expected.splitlines():
            assert line in results[name].stdout.splitlines(), (name, line, results[name].stdout)
    assert results["ddp"].stdout.count("world size 2") == 1  # fabric.print: rank 0 only


def test_the_raw_and_the_fabric_loop_give_bit_identical_weights(ran):
    folder, results = ran
    assert results["raw"].returncode == 0 and results["fabric"].returncode == 0
    raw = torch.load(folder / "raw" / "weights.pt", weights_only=True)
    fabric = torch.load(folder / "fabric" / "weights.pt", weights_only=True)
    assert list(raw) == list(fabric) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert all(torch.equal(raw[key], fabric[key]) for key in raw)
    assert not torch.equal(raw["0.weight"], torch.nn.Linear(8, 32).weight)  # it trained


def test_the_conversion_changes_exactly_the_five_marked_lines():
    raw = [line for line in SNIPPETS["raw"].splitlines() if line.strip()]
    fabric = [line for line in SNIPPETS["fabric"].splitlines() if line.strip()]
    diff = list(difflib.ndiff(raw, fabric))
    added = [line[2:] for line in diff if line.startswith("+ ")]
    removed = [line[2:] for line in diff if line.startswith("- ")]
    assert [line.rsplit("# <- ", 1)[1] for line in added] == ["1", "2", "3", "4", "5"]
    assert [line for line in fabric if "# <- " in line] == added
    assert removed == [  # the two lines that 4 and 5 replace; 1, 2 and 3 are new
        "loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)", "        loss.backward()"
    ]
