"""cmopt installs and imports with torch alone; the experiment suite's packages are an extra, and
every pin lives in constraints.txt."""

from __future__ import annotations

import email
import pathlib
import subprocess
import sys
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def built_metadata(tmp_path) -> email.message.Message:
    """The METADATA pip would read from a wheel of this checkout (setuptools' PEP 517 hook)."""
    script = (
        "import sys, setuptools.build_meta as b; "
        "print(b.prepare_metadata_for_build_wheel(sys.argv[1]))"
    )
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip().splitlines()[-1]
    return email.message_from_string((tmp_path / out / "METADATA").read_text())


def test_the_wheel_requires_torch_alone_and_the_suite_is_an_extra(tmp_path):
    metadata = built_metadata(tmp_path)
    requires = metadata.get_all("Requires-Dist")
    unconditional = [r for r in requires if "extra ==" not in r]
    assert [r.split(">")[0].split("=")[0].split("<")[0].strip() for r in unconditional] == ["torch"], unconditional
    assert "experiments" in metadata.get_all("Provides-Extra")
    assert any(r.startswith("hydra-core") and 'extra == "experiments"' in r for r in requires)


def test_every_requirement_is_pinned_once_in_the_constraints_file():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower()] = version
    names = [r for r in project["dependencies"]] + [r for extra in project["optional-dependencies"].values() for r in extra]
    bare = {r.split(">")[0].split("=")[0].split("<")[0].split(";")[0].strip().lower() for r in names}
    assert bare <= set(pins), f"not pinned in constraints.txt: {sorted(bare - set(pins))}"
    assert all("==" not in r for r in names), "exact pins belong in constraints.txt, not pyproject.toml"


def test_cmopt_imports_and_steps_with_every_experiment_package_hidden():
    """A fresh process in which importing any package of the `experiments` extra (but numpy) fails."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    hidden = [r.split(";")[0].split(">")[0].split("=")[0].strip() for r in project["optional-dependencies"]["experiments"]]
    hidden.remove("numpy")  # torch itself imports numpy where it is installed (torch._dynamo does)
    script = f"""
import importlib.abc, importlib.machinery, importlib.metadata, sys
dists = {hidden!r}
modules = {{m for m, ds in importlib.metadata.packages_distributions().items()
           if any(d.lower() == h.lower() for d in ds for h in dists)}} - {{"torch"}}
assert modules, "no module of the extra found"
class Hide(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in modules:
            return importlib.machinery.ModuleSpec(name, self)
    def create_module(self, spec):
        raise ModuleNotFoundError(f"{{spec.name}} is hidden: cmopt must not need it", name=spec.name)
sys.meta_path.insert(0, Hide())
import torch, cmopt
p = torch.nn.Parameter(torch.ones(3))
opt = cmopt.create_optimizer("sam_adam_cm", [p], lr=0.1)
p.grad = torch.ones(3)
opt.first_step(); opt.second_step()
print("ok", sorted(m for m in sys.modules if m.split(".")[0] in modules))
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "ok []"
