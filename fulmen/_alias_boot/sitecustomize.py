"""fulmen's start-up hook for the Lightning alias (see fulmen/alias.py).

`fulmen.alias.install()` puts this folder first on PYTHONPATH and sets FULMEN_ALIAS=1, so every
Python process the program starts runs this file when it starts (Python imports `sitecustomize`
from its path at start-up): the alias is on before the process imports anything. Then it runs
the `sitecustomize` this one hides, if the environment has one.
"""

import os
import sys

if os.environ.get("FULMEN_ALIAS") == "1":
    try:
        from fulmen.alias import install

        install()
    except Exception as err:  # never stop an unrelated Python process from starting
        print(f"fulmen: the Lightning alias could not be turned on in this process: {err}", file=sys.stderr)


def _run_hidden_sitecustomize() -> None:
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    path = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)


_run_hidden_sitecustomize()
