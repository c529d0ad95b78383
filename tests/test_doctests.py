"""Every example of a public docstring runs: the names of ``otkit.__all__`` and ``otseg.__all__`` (and of a public
module's ``__all__``), their methods.

The examples are what the API reference shows (docs/), so a failing one is a broken page. Data (constants,
registries) has no docstring of its own and is left out; classes are searched with their own methods and
properties (not those they inherit from torch).
"""

from __future__ import annotations

import doctest
import inspect

import pytest
import torch

import otkit
import otseg

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def public_objects() -> list[tuple[str, object]]:
    """The public classes and functions: ``otkit.__all__``, ``otseg.__all__`` and their public modules' names."""
    objects = []
    for package in (otkit, otseg):
        names = [(f"{package.__name__}.{name}", getattr(package, name)) for name in package.__all__]
        for qualified, obj in list(names):  # a public module's own public names (otkit.couplings)
            if inspect.ismodule(obj):
                names += [(f"{qualified}.{name}", getattr(obj, name)) for name in obj.__all__]
        objects += [(q, obj) for q, obj in names if inspect.isclass(obj) or inspect.isfunction(obj)]
    return objects


def public_doctests() -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder(recurse=True, exclude_empty=True)
    found = []
    for qualified, obj in public_objects():
        found += finder.find(obj, qualified, module=False, globs={})
    return sorted((test for test in found if test.examples), key=lambda test: test.name)


DOCTESTS = public_doctests()


def test_the_examples_are_found():
    names = {test.name for test in DOCTESTS}
    assert {"otkit.sinkhorn", "otkit.sinkhorn_divergence", "otseg.OTSegPredictor"} <= names, sorted(names)


def test_every_public_class_and_function_has_an_example():
    missing = [name for name, obj in public_objects() if ">>>" not in (obj.__doc__ or "")]
    assert not missing, f"public names without a docstring example: {missing}"


@pytest.mark.parametrize("test", DOCTESTS, ids=[t.name for t in DOCTESTS])
def test_docstring_example_runs(test):
    torch.manual_seed(0)  # examples draw random inputs: the same ones on every run
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    output: list[str] = []
    result = runner.run(test, out=output.append, clear_globs=True)
    assert result.failed == 0, "".join(output)
