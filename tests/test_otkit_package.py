"""otkit as a library of its own: its distribution, its hygiene, its README examples, and the names of 0.1."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

import otkit

tomllib = pytest.importorskip("tomllib", reason="Python 3.11's tomllib reads pyproject.toml")
ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "otkit"
# What a user who wants a Sinkhorn loss must not get: otseg and its dependencies.
NOT_OTKIT = ("otseg", "cli", "open_clip", "torchvision", "scipy", "click", "rich", "matplotlib", "safetensors")
BLOCK = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in NOT_OTKIT)  # import raises


def _run(script: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)


def _subpackages() -> set[str]:
    return {
        ".".join(("otkit", *p.parent.relative_to(PACKAGE).parts))
        for p in PACKAGE.rglob("__init__.py")
        if not {"build", "__pycache__"} & set(p.parts)
    }


def test_the_distribution_lists_every_subpackage_and_requires_only_torch(tmp_path):
    config = tomllib.loads((PACKAGE / "pyproject.toml").read_text())
    assert set(config["tool"]["setuptools"]["packages"]) == _subpackages()
    assert config["project"]["dependencies"] == ["torch>=2.4"]
    source = tmp_path / "otkit"
    shutil.copytree(PACKAGE, source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(source)]
    proc = subprocess.run([*cmd, "-w", str(tmp_path / "dist")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = (tmp_path / "dist").glob("otkit-*.whl")
    assert wheel.name.startswith(f"otkit-{otkit.__version__}-")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = zf.read(f"otkit-{otkit.__version__}.dist-info/METADATA").decode()
    requires = [line.split(": ", 1)[1] for line in metadata.splitlines() if line.startswith("Requires-Dist: ")]
    assert requires == ["torch>=2.4", 'triton>=3.0; extra == "triton"']
    assert "otkit/py.typed" in names
    assert {f"{pkg.replace('.', '/')}/__init__.py" for pkg in _subpackages()} <= names
    assert not any(name.startswith(("otseg/", "cli/")) for name in names)


def test_one_version_in_one_place_with_its_changelog():
    assert re.fullmatch(r"\d+\.\d+\.\d+", otkit.__version__)
    changelog = (PACKAGE / "CHANGELOG.md").read_text()
    assert f"## {otkit.__version__}" in changelog
    assert "version" not in tomllib.loads((PACKAGE / "pyproject.toml").read_text())["project"]


def test_import_and_cpu_solves_import_no_triton_and_never_touch_the_gpu():
    script = BLOCK + (
        "import torch\n"
        "def refuse(*args, **kwargs):\n"
        "    raise AssertionError('otkit initialised CUDA on CPU inputs')\n"
        "torch.cuda._lazy_init = refuse\n"
        "import otkit\n"
        "assert 'triton' not in sys.modules, 'import otkit imported triton'\n"
        "x, y = torch.rand(50, 3), torch.rand(40, 3)\n"
        "otkit.sinkhorn(torch.rand(3, 20, 5), grad='implicit').value.sum()\n"
        "otkit.sinkhorn_points(x, y, storage='streaming').barycentric_map()\n"
        "otkit.sinkhorn_divergence(x.requires_grad_(), y).value.backward()\n"
        "q = torch.randn(2, 16, 8)\n"
        "otkit.sinkhorn_attention(q, q, q, storage='streaming')\n"
        "otkit.SinkhornAttention(8, 2)(q, q, q)\n"
        "otkit.multi_prompt_transport(torch.randn(1, 30, 8), torch.randn(3, 4, 8))\n"
        "assert 'triton' not in sys.modules, 'a CPU solve imported triton'\n"
        "assert not torch.cuda.is_initialized()\n"
    )
    proc = _run(script)
    assert proc.returncode == 0, proc.stderr


def _python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


def test_the_readme_examples_run_with_otkit_alone():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## otkit\n") : readme.index("\n## otseg")]
    blocks = _python_blocks(section) + _python_blocks((PACKAGE / "README.md").read_text())
    assert len(blocks) >= 2
    names = set(re.findall(r"otkit\.([A-Za-z_]+)\(", "\n".join(blocks)))
    helpers = {"unit_vectors"}
    entry_points = {n for n in otkit.__all__ if callable(getattr(otkit, n)) and not n[0].isupper()} - helpers
    entry_points |= {"SinkhornOptions", "SinkhornAttention", "MultiPromptSinkhornAttention"}
    assert entry_points <= names, f"README without an example of {sorted(entry_points - names)}"
    seeded = "import torch\ntorch.manual_seed(0)\n"  # the examples draw random data: the same draws on every run
    for block in blocks:
        proc = _run(BLOCK + "import warnings\nwarnings.simplefilter('error')\n" + seeded + block)
        assert proc.returncode == 0, f"{block}\n{proc.stderr}"


def test_settings_are_taken_the_same_way_everywhere():
    x, y = torch.rand(30, 2, dtype=torch.float64), torch.rand(20, 2, dtype=torch.float64)
    options = otkit.SinkhornOptions(eps=0.1, max_iter=300, tol=1e-9)
    pairs = [
        (
            otkit.sinkhorn(otkit.pairwise_cost(x, y), options=options).f,
            otkit.sinkhorn(otkit.pairwise_cost(x, y), None, None, 0.1, max_iter=300, tol=1e-9).f,
        ),
        (
            otkit.sinkhorn_points(x, y, options=options).f,
            otkit.sinkhorn_points(x, y, eps=0.1, max_iter=300, tol=1e-9).f,
        ),
        (
            otkit.sinkhorn_divergence(x, y, options=options).value,
            otkit.sinkhorn_divergence(x, y, None, None, 0.1, max_iter=300, tol=1e-9).value,
        ),
    ]
    for with_options, with_keywords in pairs:
        assert torch.equal(with_options, with_keywords)
    assert otkit.SinkhornAttention(4, 1, options=options, eps=0.5).options == options.replace(eps=0.5)
    for call in (
        lambda: otkit.sinkhorn(torch.rand(3, 4), max_iters=5),
        lambda: otkit.sinkhorn_points(x, y, tolerance=1e-3),
        lambda: otkit.sinkhorn_divergence(x, y, iters=3),
        lambda: otkit.sinkhorn_attention(x, x, x, temperature=2.0),
        lambda: otkit.SinkhornAttention(4, 1, n_iter=3),
    ):
        with pytest.raises(ValueError, match=r"unexpected keyword argument.*solver settings are eps and rho_a"):
            call()
    with pytest.raises(ValueError, match=r"options must be an otkit\.SinkhornOptions"):
        otkit.sinkhorn(torch.rand(3, 4), options={"eps": 0.1})
    with pytest.raises(ValueError, match=r"rho_a=0\.5 and rho_b=1\.0"):
        otkit.sinkhorn_divergence(x, y, rho_a=0.5, rho_b=1.0)


def test_results_are_frozen():
    x, y = torch.rand(10, 2), torch.rand(8, 2)
    results = [
        otkit.sinkhorn(torch.rand(2, 5, 4)),
        otkit.sinkhorn_points(x, y),
        otkit.sinkhorn_divergence(x, y),
        otkit.multi_prompt_transport(torch.randn(1, 6, 4), torch.randn(2, 3, 4)),
    ]
    for res in results:
        with pytest.raises(AttributeError):
            res.f = None


def _warns_once(fn, match):
    """``fn()`` warns ``match`` (a FutureWarning) the first time and not the second time."""
    from otkit import _deprecation

    _deprecation._WARNED.clear()
    with pytest.warns(FutureWarning, match=match):
        first = fn()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        second = fn()
    return first, second


def test_the_names_of_0_1_keep_working_and_warn_once():
    cost, options = torch.rand(3, 7, 4), otkit.SinkhornOptions(eps=0.1)
    old, _ = _warns_once(lambda: options.solve(cost), "otkit.sinkhorn\\(cost, a, b, options=options\\)")
    assert torch.equal(old.f, otkit.sinkhorn(cost, options=options).f)

    pixels, prompts = torch.randn(1, 9, 4), torch.randn(2, 3, 4)
    old, _ = _warns_once(lambda: otkit.multi_prompt_transport(pixels, prompts, options), "options=options")
    assert torch.equal(old.plan, otkit.multi_prompt_transport(pixels, prompts, options=options).plan)
    (plan, score, _, result), _ = _warns_once(lambda: tuple(old), "frozen dataclass")
    assert plan is old.plan and score is old.score and result is old.result

    q = torch.randn(2, 5, 4)
    (out, weights), _ = _warns_once(lambda: otkit.sinkhorn_attention(q, q, q, return_weights=True), "return_weights")
    assert torch.equal(out, otkit.sinkhorn_attention(q, q, q))
    assert torch.equal(weights, otkit.sinkhorn_attention_weights(q, q))

    x = torch.rand(12, 2, requires_grad=True)
    res = otkit.sinkhorn_divergence(x, torch.rand(9, 2))
    total, _ = _warns_once(lambda: res + 1.0, "use its .value")
    assert torch.equal(total, res.value + 1.0)
    assert torch.equal(torch.stack([res, res]), torch.stack([res.value, res.value]))
    res.backward()  # the 0.1 spelling: the divergence was the tensor itself
    assert x.grad is not None and float(res.detach()) == float(res.value.detach())

    sys.modules.pop("otkit.result", None)
    module, _ = _warns_once(lambda: __import__("otkit.result", fromlist=["SinkhornResult"]), "otkit.dense.result")
    assert module.SinkhornResult is otkit.SinkhornResult
    sys.modules.pop("otkit.multi_prompt", None)
    with pytest.warns(FutureWarning, match="otkit.attention.multi_prompt"):
        from otkit.multi_prompt import MultiPromptTransport
    assert MultiPromptTransport is otkit.MultiPromptTransport
