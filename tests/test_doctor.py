"""`fulmen doctor`: every planted mistake in tests/doctor_corpus/ is found at its line, clean code
(the corpus's look-alikes, examples/, fulmen itself) gives nothing, the command's exit status and
output, the check at fit start, and the runtime errors that name the doctor code."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from helpers import quiet_trainer
from torch.utils.data import DataLoader, TensorDataset

import fulmen as pl
from fulmen import doctor
from fulmen.doctor import RULES, DoctorWarning, check_file, check_paths, check_source
from fulmen.errors import MisconfigurationException

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(__file__).resolve().parent / "doctor_corpus"
CORPUS_FILES = sorted(CORPUS.glob("*.py"))


def _expected(path: Path) -> set[tuple[int, str]]:
    lines = path.read_text().splitlines()
    return {(i + 1, code) for i, line in enumerate(lines) for code in re.findall(r"# expect: (FM\d{3})", line)}


@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: p.stem)
def test_corpus_findings_are_exactly_the_planted_mistakes(path):
    found = {(f.line, f.code) for f in check_file(path)}
    assert found == _expected(path)
    if path.stem.startswith("clean"):
        assert found == set()


def test_every_code_is_planted_in_the_corpus_and_documented():
    planted = {code for path in CORPUS_FILES for _, code in _expected(path)}
    assert planted == set(RULES)
    docs = (REPO / "docs" / "common_mistakes.md").read_text()
    for code in RULES:
        assert f"## {code}" in docs, code


def _doc_examples() -> dict[str, tuple[str, str]]:
    """code -> (before, after) from the first two python blocks under `## FMxxx` in the docs."""
    docs = (REPO / "docs" / "common_mistakes.md").read_text()
    sections = re.split(r"^## (FM\d{3})", docs, flags=re.M)[1:]
    result = {}
    for code, body in zip(sections[::2], sections[1::2]):
        blocks = re.findall(r"```python\n(.*?)```", body, flags=re.S)
        result[code] = (blocks[0], blocks[1])
    return result


@pytest.mark.parametrize("code", sorted(RULES))
def test_docs_before_example_has_the_mistake_and_after_example_does_not(code):
    before, after = _doc_examples()[code]
    assert code in {f.code for f in check_source(before)}
    assert code not in {f.code for f in check_source(after)}


def test_findings_carry_place_message_and_fix():
    findings = check_file(CORPUS / "bad_devices.py")
    first = findings[0]
    assert (first.code, first.line, first.severity) == ("FM101", 14, "error")
    text = first.format()
    assert text.startswith(f"{CORPUS / 'bad_devices.py'}:14:")
    assert "FM101 (error)" in text and "\n    Fix: " in text
    assert all(f.message and f.fix for f in findings)


def test_examples_and_fulmen_itself_have_no_findings():
    findings, files = check_paths([REPO / "examples", REPO / "fulmen"])
    assert [f.format() for f in findings] == []
    assert files > 40


def test_main_prints_each_fix_once(capsys):
    """Four FM101 findings share one fix: it is printed once, the others point back to it."""
    assert doctor.main([str(CORPUS / "bad_devices.py")]) == 1
    out = capsys.readouterr().out
    fixes = [line for line in out.splitlines() if line.startswith("    Fix: ")]
    real = [f for f in fixes if not f.startswith("    Fix: as above")]
    assert len(real) == len(set(real)) and len(fixes) == 8
    assert "    Fix: as above (FM101)." in fixes


def test_main_exit_status_output_and_options(capsys):
    assert doctor.main([str(CORPUS / "bad_devices.py")]) == 1
    out = capsys.readouterr().out
    assert out.count("FM101 (error)") == 4 and out.count("FM102 (warning)") == 2
    assert out.count("FM103 (warning)") == 2
    assert "8 findings in 1 file (4 errors, 4 warnings)" in out

    layout = str(CORPUS / "bad_layout.py")  # advice only: passes unless --strict
    assert doctor.main([layout]) == 0
    assert doctor.main([layout, "--strict"]) == 1
    assert doctor.main([layout, "--strict", "--ignore", "FM5"]) == 0
    capsys.readouterr()

    assert doctor.main([str(CORPUS / "bad_module.py"), "--format", "json"]) == 1
    records = json.loads(capsys.readouterr().out)
    assert [(r["code"], r["line"], r["severity"]) for r in records] == [
        ("FM401", 10, "error"), ("FM402", 26, "warning"), ("FM403", 33, "warning"), ("FM403", 34, "warning"),
        ("FM403", 35, "warning"), ("FM401", 43, "error")]

    assert doctor.main([str(CORPUS / "missing.py")]) == 2
    assert "no such file or folder. Received:" in capsys.readouterr().err


def test_a_file_that_does_not_parse_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "broken.py").write_text("def f(:\n")
    assert doctor.main([str(tmp_path)]) == 2
    assert "broken.py:1: cannot parse" in capsys.readouterr().err


def test_console_command_on_the_examples_prints_no_findings():
    result = subprocess.run([sys.executable, "-m", "fulmen", "doctor", "examples/", "fulmen/"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.fullmatch(r"fulmen doctor: 0 findings in \d+ files\n", result.stdout)


# --- at fit start ---------------------------------------------------------------------------------


def _loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)), batch_size=4)


@pytest.fixture
def corpus_module(monkeypatch):
    monkeypatch.syspath_prepend(str(CORPUS))
    import fit_warns

    return fit_warns


def test_fit_warns_once_per_finding_with_code_and_place(tmp_path, corpus_module, monkeypatch):
    monkeypatch.delenv("FULMEN_DOCTOR", raising=False)
    doctor._cache.clear()
    parses = []
    real = doctor._findings
    monkeypatch.setattr(doctor, "_findings", lambda *a: parses.append(a[2]) or real(*a))
    for _ in range(2):  # the second fit reads the cache
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            quiet_trainer(tmp_path, max_epochs=1).fit(corpus_module.KeepsGraphs(), _loader())
        messages = [str(w.message) for w in record if issubclass(w.category, DoctorWarning)]
        assert len(messages) == 2, messages
        assert f"fulmen doctor FM403 at {corpus_module.__file__}:18: `self.losses.append(loss)`" in messages[0]
        assert f"fulmen doctor FM103 at {corpus_module.__file__}:19: torch.zeros(...)" in messages[1]
        assert all("Fix: " in m and "FULMEN_DOCTOR=0" in m for m in messages)
    assert parses == [corpus_module.__file__]


def test_fit_start_check_is_switched_off_by_the_environment(tmp_path, corpus_module, monkeypatch):
    monkeypatch.setenv("FULMEN_DOCTOR", "0")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        trainer = quiet_trainer(tmp_path, max_epochs=1)
        trainer.fit(corpus_module.KeepsGraphs(), _loader())
    assert not [w for w in record if issubclass(w.category, DoctorWarning)]
    assert trainer.global_step == 2


class _ReturnsDict(pl.LightningModule):
    def __init__(self, output):
        super().__init__()
        self.net = torch.nn.Linear(4, 1)
        self.output = output

    def training_step(self, batch, batch_idx):
        loss = torch.nn.functional.mse_loss(self.net(batch[0]), batch[1])
        return self.output(loss)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_runtime_errors_name_the_doctor_code(tmp_path):
    with pytest.raises(MisconfigurationException, match=r"without 'loss'.*\(fulmen doctor code FM202\)"):
        quiet_trainer(tmp_path, max_epochs=1).fit(_ReturnsDict(lambda loss: {"acc": loss}), _loader())
    with pytest.raises(MisconfigurationException, match=r"not loss.item\(\)\. \(fulmen doctor code FM202\)"):
        quiet_trainer(tmp_path, max_epochs=1).fit(_ReturnsDict(lambda loss: loss.item()), _loader())
    with pytest.warns(UserWarning, match=r"returned None.*\(fulmen doctor code FM201\)"):  # every batch: an error
        with pytest.raises(MisconfigurationException, match=r"None for every batch.*\(fulmen doctor code FM201\)"):
            quiet_trainer(tmp_path, max_epochs=1).fit(_ReturnsDict(lambda loss: None), _loader())

    class NoSuper(pl.LightningModule):
        def __init__(self):
            self.net = torch.nn.Linear(4, 1)

    with pytest.raises(MisconfigurationException, match=r"super\(\).__init__\(\).*\(fulmen doctor code FM401\)"):
        NoSuper()


def test_doctor_module_is_not_imported_by_import_fulmen():
    code = "import sys, fulmen; print(sorted(m for m in sys.modules if m.startswith('fulmen.') and m in " \
           "('fulmen.doctor', 'fulmen.doctor_checks', 'fulmen.cli', 'fulmen.report')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.stdout.strip() == "[]", result.stderr
