"""The drop-in runner: Lightning programs and a Lightning-based library run unmodified on fulmen.

Every test starts real processes: `fulmen run` (the console command), `python -m fulmen run`,
torchrun under the runner, and pytest with `-p fulmen.alias` on the small library in
tests/lightning_projects/litlib. The parity tests run the same program on the real
pytorch-lightning 2.6.6 (a dev dependency) and compare losses, checkpoint names and logged keys.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fulmen import alias, surface
from fulmen.strategies.environment import free_port

PROJECTS = Path(__file__).parent / "lightning_projects"
FULMEN = [sys.executable, "-m", "fulmen"]


def _env(**extra: str) -> dict[str, str]:
    """The environment without any alias left on by the test process itself."""
    env = {k: v for k, v in os.environ.items() if k != alias.ENV_VAR}
    env["PYTHONPATH"] = os.pathsep.join(p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                                        if p and p != alias.BOOT_DIR)
    env.update(extra)
    return env


def _run(args: list[str], cwd: Path | None = None, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"{args} exited {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


def _summary(out: Path, name: str = "summary.json") -> dict:
    return json.loads((out / name).read_text())


# --- parity: the same program on Lightning and on fulmen --------------------------------------
@pytest.mark.parametrize("variant", [[], ["--multi"]], ids=["one_loader", "dict_of_two_loaders"])
def test_a_lightning_program_gives_lightnings_numbers_on_fulmen(tmp_path, variant):
    program = str(PROJECTS / "regression_program.py")
    _run([sys.executable, program, str(tmp_path / "lightning"), *variant])
    _run([*FULMEN, "run", program, str(tmp_path / "fulmen"), *variant])
    real, ours = _summary(tmp_path / "lightning"), _summary(tmp_path / "fulmen")
    assert real["framework"] == "pytorch_lightning" and ours["framework"] == "fulmen"
    assert ours["losses"] == pytest.approx(real["losses"], abs=1e-6)
    assert len(ours["losses"]) == len(real["losses"]) == real["global_step"] == ours["global_step"]
    for key in ("checkpoints", "best", "logged_keys", "hparams", "bad_argument_refused"):
        assert ours[key] == real[key], key
    assert ours["validate"][0]["val_loss"] == pytest.approx(real["validate"][0]["val_loss"], abs=1e-6)


def test_a_lightning_based_librarys_own_test_suite_passes_on_lightning_and_on_fulmen():
    library = PROJECTS / "litlib"
    on_lightning = _run([sys.executable, "-m", "pytest", "-q"], cwd=library)
    on_fulmen = _run([sys.executable, "-m", "pytest", "-p", "fulmen.alias"], cwd=library)  # header: which ran
    assert "8 passed" in on_lightning.stdout and "8 passed" in on_fulmen.stdout
    assert "fulmen alias: lightning / pytorch_lightning -> fulmen" in on_fulmen.stdout


# --- the runner -------------------------------------------------------------------------------
def test_fulmen_run_resolves_every_lightning_name_to_fulmen(tmp_path):
    _run([*FULMEN, "run", str(PROJECTS / "lightning_program.py"), str(tmp_path)])
    result = _summary(tmp_path, "result.json")
    assert result["trainer_class"] == "fulmen.trainer.Trainer"
    assert result["lightning_version"] == surface.LIGHTNING_API_VERSION
    assert result["global_step"] == 12 and result["world_size"] == 1 and result["fit_states"]
    assert result["parameters"] == 4 * 8 + 8 + 8 * 3 + 3
    assert result["last_exists"] and result["hparams_shape"] == "(4, 8)"


def test_torchrun_under_the_runner_trains_with_ddp_on_every_rank(tmp_path):
    _run([*FULMEN, "run", "torchrun", "--nproc-per-node", "2", f"--master-port={free_port()}",
          str(PROJECTS / "lightning_program.py"), str(tmp_path)], timeout=300)
    result = _summary(tmp_path, "result.json")
    assert result["trainer_class"] == "fulmen.trainer.Trainer"
    assert result["world_size"] == 2
    assert result["global_step"] == 6  # 48 samples / 2 ranks / batch 8 = 3 steps per epoch, 2 epochs


def test_fulmen_run_m_runs_a_module_with_its_arguments(tmp_path):
    package = tmp_path / "proj"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "main.py").write_text(
        "import sys\nimport pytorch_lightning as pl\nfrom lightning.pytorch.utilities import rank_zero_only\n"
        "print('ARGS', sys.argv[1:], pl.Trainer.__module__, __name__, rank_zero_only.rank)\n"
    )
    result = _run([*FULMEN, "run", "-m", "proj.main", "--flag", "x"], cwd=tmp_path)
    assert "ARGS ['--flag', 'x'] fulmen.trainer __main__ 0" in result.stdout


def test_processes_the_program_starts_get_the_alias(tmp_path):
    """A spawned multiprocessing child and a spawned DataLoader worker unpickle Lightning classes."""
    (tmp_path / "lib.py").write_text(
        "import torch\nfrom pytorch_lightning.utilities.apply_func import move_data_to_device\n"
        "class Data(torch.utils.data.Dataset):\n"
        "    def __len__(self): return 4\n"
        "    def __getitem__(self, i):\n"
        "        import lightning.pytorch as pl\n"
        "        return torch.tensor(float(pl.Trainer.__module__ == 'fulmen.trainer'))\n"
        "def child(queue):\n"
        "    import pytorch_lightning as pl\n"
        "    queue.put(pl.LightningModule.__module__)\n"
    )
    (tmp_path / "main.py").write_text(
        "import multiprocessing as mp, subprocess, sys, torch\nimport lib\n"
        "if __name__ == '__main__':\n"
        "    ctx = mp.get_context('spawn'); q = ctx.Queue(); p = ctx.Process(target=lib.child, args=(q,)); p.start()\n"
        "    print('CHILD', q.get(timeout=120)); p.join()\n"
        "    loader = torch.utils.data.DataLoader(lib.Data(), batch_size=4, num_workers=1, multiprocessing_context='spawn')\n"
        "    print('WORKER', next(iter(loader)).tolist())\n"
        "    out = subprocess.run([sys.executable, '-c', 'import lightning; print(lightning.Trainer.__module__)'],\n"
        "                         capture_output=True, text=True).stdout.strip()\n"
        "    print('SUBPROCESS', out)\n"
    )
    result = _run([*FULMEN, "run", "main.py"], cwd=tmp_path)
    assert "CHILD fulmen.module" in result.stdout
    assert "WORKER [1.0, 1.0, 1.0, 1.0]" in result.stdout
    assert "SUBPROCESS fulmen.trainer" in result.stdout


def test_the_start_up_hook_loads_neither_torch_nor_fulmen_until_lightning_is_imported(tmp_path):
    probe = "import sys, json; print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'fulmen'))))"
    with_alias = _run([sys.executable, "-c", probe], FULMEN_ALIAS="1",
                      PYTHONPATH=os.pathsep.join([alias.BOOT_DIR, os.environ.get("PYTHONPATH", "")]))
    assert set(json.loads(with_alias.stdout)) == {"fulmen", "fulmen.__about__", "fulmen.alias", "fulmen.surface"}
    # Without FULMEN_ALIAS the hook on the path does nothing at all.
    off = _run([sys.executable, "-c", probe], PYTHONPATH=alias.BOOT_DIR)
    assert json.loads(off.stdout) == []


def test_the_start_up_hook_still_runs_the_sitecustomize_it_hides(tmp_path):
    (tmp_path / "sitecustomize.py").write_text("import builtins\nbuiltins.SITE_RAN = True\n")
    out = _run([sys.executable, "-c", "import builtins; print(getattr(builtins, 'SITE_RAN', False))"],
               FULMEN_ALIAS="1", PYTHONPATH=os.pathsep.join([alias.BOOT_DIR, str(tmp_path)]))
    assert out.stdout.strip() == "True"


def test_the_alias_refuses_when_the_real_lightning_is_already_imported():
    code = "import pytorch_lightning\nimport fulmen.alias\nfulmen.alias.install()\n"
    result = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "AliasError: fulmen's Lightning alias cannot be turned on: the real Lightning is already imported" in result.stderr
    assert "Fix: turn the alias on before anything imports Lightning" in result.stderr


def test_fulmen_run_names_a_missing_script():
    result = subprocess.run([*FULMEN, "run", "no_such_script.py"], env=_env(), capture_output=True, text=True)
    assert result.returncode == 2
    assert "no such file or command: 'no_such_script.py'" in result.stderr


# --- in-process: install(), the table ----------------------------------------------------------
_PROBE_TABLE = """
import importlib, json
import fulmen.alias
from fulmen import surface
fulmen.alias.install(children=False)
bad = {}
for key, target in surface.TABLE.items():
    for name in surface.import_names(key):
        try:
            module = importlib.import_module(name)
            for attr in (target if isinstance(target, dict) else {}):
                if attr != "*":
                    getattr(module, attr)
            dir(module)
        except Exception as err:
            bad[name] = f"{type(err).__name__}: {err}"
print(json.dumps(bad))
"""


def test_every_path_in_the_table_imports_under_every_lightning_name():
    result = _run([sys.executable, "-c", _PROBE_TABLE])
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {}


def test_lightning_paths_fulmen_does_not_provide_fail_with_a_clear_error():
    code = ("import fulmen.alias; fulmen.alias.install(children=False)\n"
            "import lightning.pytorch.loops.fit_loop\n")
    result = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120)
    assert "No module named 'lightning.pytorch.loops' under fulmen's Lightning alias" in result.stderr
    assert "Lightning internals such as trainer.connectors and the loop classes are out of scope" in result.stderr


def test_the_same_objects_stand_at_lightnings_module_paths():
    code = (
        "import sys, importlib.metadata as md\nimport fulmen.alias\nfulmen.alias.install(children=False)\n"
        "import lightning as L, lightning.pytorch as pl, pytorch_lightning as ptl, fulmen\n"
        "import lightning.pytorch.callbacks.model_checkpoint as mc, fulmen.callbacks.model_checkpoint as fmc\n"
        "from pytorch_lightning.callbacks.progress.tqdm_progress import TQDMProgressBar\n"
        "assert mc is fmc and pl.Trainer is ptl.Trainer is L.Trainer is fulmen.Trainer\n"
        "assert L.pytorch is pl and TQDMProgressBar is fulmen.callbacks.TQDMProgressBar\n"
        "assert 'ModelCheckpoint' in dir(pl.callbacks) and 'ModelCheckpoint' in pl.callbacks.__all__\n"
        "assert fulmen.callbacks.progress.__name__ == 'fulmen.callbacks.progress'  # fulmen's own names untouched\n"
        "print(L.__version__, ptl.__version__, md.version('lightning'), md.version('pytorch_lightning'), fulmen.__version__)\n"
        "import lightning.fabric as LF, lightning_fabric, fulmen.fabric\n"
        "print('FABRIC', L.Fabric is LF.Fabric is lightning_fabric.Fabric is fulmen.fabric.Fabric)\n"
    )
    result = _run([sys.executable, "-c", code])
    version = surface.LIGHTNING_API_VERSION
    import fulmen

    assert f"{version} {version} {version} {version} {fulmen.__version__}" in result.stdout
    assert "FABRIC True" in result.stdout
