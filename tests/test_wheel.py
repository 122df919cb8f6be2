"""The wheel as a vehicle team installs it: built from the repository, installed into a fresh venv
outside it, and run from another folder, so nothing can come from the checkout by accident.

Installing every dependency from PyPI takes minutes and gigabytes, so the default test gives the
fresh venv the dependencies of the project's venv through a `.pth` file: a plain path line adds
that folder to sys.path without running the `.pth` files inside it, so the project's editable
install of edgert does not leak in (asserted: `edgert.__file__` is inside the fresh venv). The
`slow` variant installs the wheel with its dependencies from .ci/constraints.txt, as CI and
vehicle images do.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# Building the wheel and the first run of a fresh install (it compiles the kernels) take minutes on a
# loaded 2-core machine; the module fixtures' time counts towards the first test that uses them.
pytestmark = pytest.mark.timeout(900)
ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
BUNDLED = ("edgert/configs/sim.toml", "edgert/configs/fleet-policy.toml", "edgert/runtime/edgert_command.dbc",
           "edgert/models/publishers/edgert-sim.pub")
# What a build must leave out of the copy it builds from: the venv, VCS data, earlier build outputs.
NOT_SOURCE = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                                    ".hypothesis", ".mypy_cache", ".ruff_cache", "bench-out", "out", "*.nbi", "*.nbc")


def _run(cmd: list[str | Path], cwd: Path, env: dict[str, str] | None = None,
         timeout: float = 300) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{' '.join(map(str, cmd))} -> {p.returncode}\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}"
    return p


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip wheel --no-deps` of a copy of the repository (the build writes build/ and *.egg-info into
    the folder it builds, which must not be the checkout another test run may be using)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "edgert-checkout"  # not "src": setuptools then fails with an AttributeError
    shutil.copytree(ROOT, src, ignore=NOT_SOURCE)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q", "-w", tmp / "dist",
          src], cwd=tmp)
    (whl,) = (tmp / "dist").glob("edgert-*.whl")
    return whl


def _clean_env(tmp: Path) -> dict[str, str]:
    """An environment with this user's folders under `tmp` and nothing pointing at the checkout."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "NUMBA_CACHE_DIR", "VIRTUAL_ENV", "PYTHONHOME") and not k.startswith("XDG_")}
    for var, sub in (("HOME", "home"), ("XDG_DATA_HOME", "data"), ("XDG_CACHE_HOME", "cache"),
                     ("XDG_CONFIG_HOME", "config")):
        env[var] = str(tmp / sub)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _site_packages(venv: Path) -> Path:
    (sp,) = venv.glob("lib/python3*/site-packages")
    return sp


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.suffix != ".pyc"}


# --- what the wheel holds -------------------------------------------------------------------


def test_the_wheel_holds_only_edgert_and_every_package_and_data_file(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    outside = sorted({n.split("/")[0] for n in names} - {"edgert", wheel.name.split("-py")[0] + ".dist-info"})
    assert not outside, f"the wheel installs top-level names other than edgert: {outside}"
    for f in BUNDLED:
        assert f in names, f"{f} is not in the wheel: add it to [tool.setuptools.package-data]"
    models = [p for p in (ROOT / "models").glob("*/*") if p.suffix in (".onnx", ".toml", ".sig", ".md")]
    assert len(models) >= 12
    for p in models:
        rel = f"{p.parent.name}/{p.name}"
        assert f"edgert/models/{rel}" in names, f"models/{rel} is not in the wheel"
    # Every package folder of the repository is a listed package (else its modules silently miss the wheel).
    setuptools = PYPROJECT["tool"]["setuptools"]
    folders = {v: k for k, v in setuptools["package-dir"].items()}
    listed = set(setuptools["packages"])
    for init in sorted(ROOT.glob("[!.]*/**/__init__.py")):
        rel = init.parent.relative_to(ROOT)
        if rel.parts[0] in ("tests", "build", "docs") or ".venv" in rel.parts:
            continue
        top = next(p for p in (str(Path(*rel.parts[:i])) for i in range(len(rel.parts), 0, -1)) if p in folders)
        pkg = ".".join([folders[top], *rel.parts[len(Path(top).parts):]])
        assert pkg in listed, f"{rel}/ is a package folder missing from pyproject's packages: add {pkg!r}"
        assert f"{pkg.replace('.', '/')}/__init__.py" in names


def test_onnx_runtime_is_the_gpu_build_where_its_wheel_exists_and_the_cpu_build_elsewhere(wheel: Path) -> None:
    from packaging.requirements import Requirement

    meta = zipfile.ZipFile(wheel).read("edgert-0.1.0.dist-info/METADATA").decode()
    reqs = [Requirement(line.split(":", 1)[1]) for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    core = [r for r in reqs if not (r.marker and "extra" in str(r.marker))]
    platforms = {"linux-x86_64": ("linux", "x86_64"), "windows": ("win32", "AMD64"),
                 "jetson-aarch64": ("linux", "aarch64"), "macos-arm64": ("darwin", "arm64")}
    for label, (plat, machine) in platforms.items():
        env = {"sys_platform": plat, "platform_machine": machine, "python_version": "3.11"}
        ort = [r.name for r in core
               if r.name.startswith("onnxruntime") and (r.marker is None or r.marker.evaluate(env))]
        assert ort == (["onnxruntime-gpu"] if label in ("linux-x86_64", "windows") else ["onnxruntime"]), (label, ort)
    bench_only = {"matplotlib", "psutil", "tqdm"}
    assert not bench_only & {r.name for r in core}, "a benchmark-only dependency is in the core install"
    assert {r.name for r in reqs if r.marker and r.marker.evaluate({"extra": "bench"})} >= bench_only


# --- installed into a fresh venv, run from elsewhere ----------------------------------------
# The first `edgert run` of a fresh install compiles the Numba kernels (its cache is keyed on the
# installed files' paths): ~25 s on a quiet 2-core machine, minutes on a loaded one, hence the timeouts.


class Fresh:
    """The fresh venv, this user's folders for it, and what pip installed (to see nothing is added)."""

    def __init__(self, venv: Path, home: Path) -> None:
        self.venv, self.home = venv, home
        self.site = _site_packages(venv)
        self.env = _clean_env(home)
        self.installed = _files(self.site / "edgert")

    def edgert(self, *args: str | Path, timeout: float = 300) -> str:
        """Run the installed `edgert` from a folder outside the repository; exit status 0, its stdout.
        Afterwards nothing may have been added beside the installed files (caches go to XDG folders)."""
        p = _run([self.venv / "bin" / "edgert", *args], cwd=self.home, env=self.env, timeout=timeout)
        added = _files(self.site / "edgert") - self.installed
        assert not added, f"`edgert {args[0]}` wrote into the installed package: {sorted(added)}"
        return p.stdout


@pytest.fixture(scope="module")
def fresh(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Fresh:
    """A venv made outside the repository, with the wheel installed and the project's dependencies
    reachable through a .pth file (not its editable edgert)."""
    venv = tmp_path_factory.mktemp("venv") / "v"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=venv.parent, timeout=120)
    deps = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (_site_packages(venv) / "project-deps.pth").write_text("".join(f"{p}\n" for p in deps))
    _run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--no-deps", "--no-index",
          "--disable-pip-version-check", "-q", wheel], cwd=venv.parent)
    return Fresh(venv, tmp_path_factory.mktemp("elsewhere"))


def test_edgert_is_imported_from_the_fresh_venv_and_installs_only_edgert(fresh: Fresh) -> None:
    where = _run([fresh.venv / "bin" / "python", "-c", "import edgert, edgert.runtime.zoo as z; "
                  "print(edgert.__file__); print(z.ZOO)"], cwd=fresh.home, env=fresh.env).stdout.split()
    assert Path(where[0]).is_relative_to(fresh.site) and Path(where[1]) == fresh.site / "edgert" / "models", \
        f"edgert was not imported from the fresh venv ({where}): the checkout leaked in"
    shown = _run([sys.executable, "-m", "pip", "--python", fresh.venv / "bin" / "python", "show", "-f", "edgert"],
                 cwd=fresh.home, env=fresh.env).stdout
    listed = re.findall(r"^  (\S+)$", shown, re.M)
    assert "edgert/models/pilotnet/model.onnx" in listed
    tops = {f.split("/")[0] for f in listed if not f.startswith("../")}  # ../../../bin/edgert: the script
    assert tops == {"edgert", "edgert-0.1.0.dist-info"}, tops


def test_doctor_and_models_list(fresh: Fresh) -> None:
    out = fresh.edgert("doctor")
    assert "the policy would try, in order:" in out and "CPUExecutionProvider" in out
    out = fresh.edgert("models", "list")
    for name in ("pilotnet", "pilotnet-fp16", "pilotnet-int8"):
        assert re.search(rf"^{name}\s+bundled\s+1\.0\.0 .* ok$", out, re.M), out
    assert f"bundled zoo: {fresh.site / 'edgert' / 'models'}" in out
    assert f"user zoo:    {fresh.home / 'data' / 'edgert' / 'models'}" in out


def test_run_with_no_config_runs_the_embedded_default(fresh: Fresh) -> None:
    out = fresh.edgert("run", "--duration", "3", timeout=800)
    assert re.search(r"^edgert run \S+ \(processes\): duration 3 s reached", out, re.M), out
    frames = re.search(r"; (\d+) frames at", out)
    assert frames and int(frames.group(1)) > 0, out
    assert re.search(r"end-to-end latency \(capture -> command\), [1-9]\d* commands", out), out
    assert "stayed in lane" in out, out
    # The compiled kernels went to this user's cache folder, nothing into the working directory.
    assert list((fresh.home / "cache" / "edgert" / "numba").glob("kernels-*/*")), "no Numba cache in XDG_CACHE_HOME"
    written = {p.name for p in fresh.home.iterdir()}
    assert written <= {"bench", "cache", "config", "data", "home"}, f"written into the working directory: {written}"


def test_bench_infer_quick_with_the_bench_extra(fresh: Fresh) -> None:
    """The project venv has the bench extra (matplotlib, psutil, tqdm), which the .pth passes on."""
    out = fresh.edgert("bench", "infer", "--quick", "--out", fresh.home / "bench", timeout=800)
    made = {f.name for f in (fresh.home / "bench").iterdir()}
    assert {"infer.json", "infer.md", "infer.png"} <= made, out
    assert "pilotnet-int8" in (fresh.home / "bench" / "infer.md").read_text()


BENCH_EXTRA = ("matplotlib", "mpl_toolkits", "pylab", "psutil", "tqdm")
IMPORT_EVERYTHING = """
import importlib, pkgutil, sys
import edgert.runtime, edgert.kernels
for pkg in (edgert.runtime, edgert.kernels):
    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        if not m.name.endswith(".__main__"):  # `python -m` entry points run the CLI when imported
            importlib.import_module(m.name)
print(sorted({m.split(".")[0] for m in sys.modules} & {"matplotlib", "psutil", "tqdm"}))
"""


def test_without_the_bench_extra_the_runtime_imports_and_bench_names_the_extra(
        wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A core install: the project's dependencies minus matplotlib, psutil and tqdm (a folder of links)."""
    base = tmp_path_factory.mktemp("core")
    deps = base / "deps"
    deps.mkdir()
    for sp in (Path(p) for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()):
        for entry in sp.iterdir():
            top = re.split(r"[-.]", entry.name)[0]
            if top in BENCH_EXTRA or top in ("edgert", "__editable__") or entry.suffix == ".pth":
                continue
            if not (deps / entry.name).exists():
                (deps / entry.name).symlink_to(entry)
    venv = base / "v"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=base, timeout=120)
    (_site_packages(venv) / "core-deps.pth").write_text(f"{deps}\n")
    _run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--no-deps", "--no-index",
          "--disable-pip-version-check", "-q", wheel], cwd=base)
    env = _clean_env(base)
    p = subprocess.run([venv / "bin" / "python", "-c", "import matplotlib"], cwd=base, env=env, capture_output=True)
    assert p.returncode != 0, "matplotlib is importable: the core venv is not a core install"
    out = _run([venv / "bin" / "python", "-c", IMPORT_EVERYTHING], cwd=base, env=env).stdout
    assert out.strip().splitlines()[-1] == "[]", f"the runtime imported a bench-only dependency: {out}"
    p = subprocess.run([venv / "bin" / "edgert", "bench", "infer", "--quick", "--out", base / "b"], cwd=base, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert "pip install 'edgert[bench]'" in p.stderr and "matplotlib" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_a_full_install_from_the_constraints_file_runs(wheel: Path, tmp_path: Path) -> None:
    """As a vehicle image or CI installs it: the wheel and every dependency from PyPI, versions from
    .ci/constraints.txt. Minutes and about 2 GB of downloads."""
    venv = tmp_path / "v"
    _run([sys.executable, "-m", "venv", venv], cwd=tmp_path, timeout=300)
    _run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check", "-c",
          ROOT / ".ci" / "constraints.txt", f"{wheel}[bench]"], cwd=tmp_path, timeout=3000)
    env = _clean_env(tmp_path)
    edgert = venv / "bin" / "edgert"
    assert "the policy would try" in _run([edgert, "doctor"], cwd=tmp_path, env=env).stdout
    assert re.search(r"^pilotnet\s+bundled\s.* ok$", _run([edgert, "models", "list"], cwd=tmp_path, env=env).stdout,
                     re.M)
    p = _run([edgert, "run", "--duration", "3"], cwd=tmp_path, env=env, timeout=600)
    assert "duration 3 s reached" in p.stdout
    _run([edgert, "bench", "infer", "--quick", "--out", tmp_path / "bench"], cwd=tmp_path, env=env, timeout=600)
    assert (tmp_path / "bench" / "infer.json").is_file()
