"""How much of Lightning's public surface exists under fulmen's alias: a measurement, not a test.

    python scripts/lightning_surface.py            # summary + the missing names per module
    python scripts/lightning_surface.py --json F   # also write the details to F

Needs the real pytorch-lightning (the `[dev]` extra installs 2.6.6). For every public module of
`pytorch_lightning` and `lightning_fabric` (no `_private` part in its path), it lists the module's
public names as Lightning defines them (its `__all__`, else the classes and functions defined in
it), then imports the same module and names under the alias in a second process and reports which
are there. Lightning internals that fulmen leaves out on purpose (`fulmen.surface` has no entry
for them) are counted apart from the modules fulmen means to provide.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

_LIGHTNING_SIDE = r"""
import importlib, inspect, json, pkgutil, sys, warnings
warnings.simplefilter("ignore")
import pytorch_lightning, lightning_fabric
out = {}
for package in (pytorch_lightning, lightning_fabric):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        name = info.name
        if any(part.startswith("_") for part in name.split(".")):
            continue
        try:
            module = importlib.import_module(name)
        except Exception:
            continue
        names = getattr(module, "__all__", None)
        if names is None:
            names = [n for n, v in vars(module).items() if not n.startswith("_")
                     and (inspect.isclass(v) or inspect.isfunction(v)) and getattr(v, "__module__", None) == name]
        out[name] = sorted(set(names))
print(json.dumps(out))
"""

_FULMEN_SIDE = r"""
import importlib, json, sys, warnings
warnings.simplefilter("ignore")
import fulmen.alias
fulmen.alias.install(children=False)
wanted = json.loads(sys.stdin.read())
out = {}
for name, names in wanted.items():
    try:
        module = importlib.import_module(name)
    except Exception as err:
        out[name] = {"error": f"{type(err).__name__}: {str(err)[:120]}"}
        continue
    missing = []
    for attr in names:
        try:
            getattr(module, attr)
        except Exception:
            missing.append(attr)
    out[name] = {"missing": missing}
print(json.dumps(out))
"""


def measure() -> dict:
    real = json.loads(subprocess.run([sys.executable, "-c", _LIGHTNING_SIDE], capture_output=True, text=True,
                                     check=True).stdout.strip().splitlines()[-1])
    from fulmen import surface

    provided = {name for key in surface.TABLE for name in surface.import_names(key)}
    wanted = {name: names for name, names in real.items() if name in provided}
    ours = json.loads(subprocess.run([sys.executable, "-c", _FULMEN_SIDE], input=json.dumps(wanted),
                                     capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
    return {"lightning": real, "fulmen": ours, "left_out": sorted(set(real) - provided)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write the details to this file")
    args = parser.parse_args()
    result = measure()
    real, ours = result["lightning"], result["fulmen"]
    names_total = sum(len(real[m]) for m in ours)
    missing = {m: r["missing"] for m, r in ours.items() if r.get("missing")}
    errors = {m: r["error"] for m, r in ours.items() if "error" in r}
    names_missing = sum(len(v) for v in missing.values()) + sum(len(real[m]) for m in errors)
    print(f"Lightning public modules: {len(real)}; provided by fulmen: {len(ours)} "
          f"(imports failing: {len(errors)}); left out as internals: {len(result['left_out'])}")
    print(f"public names in the provided modules: {names_total - names_missing} of {names_total} present "
          f"({100 * (names_total - names_missing) / max(names_total, 1):.1f}%)")
    for module, error in sorted(errors.items()):
        print(f"  IMPORT FAILS {module}: {error}")
    for module, names in sorted(missing.items()):
        print(f"  {module}: missing {', '.join(names)}")
    print("left out: " + ", ".join(result["left_out"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
