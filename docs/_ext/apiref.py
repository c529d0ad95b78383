"""The API reference, generated from ``otkit.__all__`` and ``otseg.__all__`` when the site is built.

For each package named in ``api_packages`` (conf.py), ``builder-inited`` writes ``api/<package>.rst``: a summary
table and one section per public name (a function, a class with its members, an exception, or data with the
``#:`` comment above its assignment), then the supporting names the public ones refer to (``api_supporting``, and
every class of the package that a public signature names). A public name without a docstring fails the build
there; after the documents are read, every public name must be an object of the Python domain, else the build
fails and lists them. References to a public object by the module that defines it (``otseg.build.build_otseg``)
resolve to its public entry (``otseg.build_otseg``). The generated pages are build outputs, ignored by git.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
import typing
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.errors import ExtensionError
from sphinx.pycode import ModuleAnalyzer, PycodeError
from sphinx.util.nodes import make_refnode

GENERATED = "api"


def public_names(package: str) -> list[str]:
    """The names of ``package.__all__``; the build fails if the package or one of its names does not import."""
    try:
        module = importlib.import_module(package)
    except Exception as exc:
        raise ExtensionError(f"API reference: cannot import {package!r}: {exc!r}") from exc
    names = getattr(module, "__all__", None)
    if not names:
        raise ExtensionError(f"API reference: {package}.__all__ is missing or empty; list the public names there.")
    absent = [name for name in names if not hasattr(module, name)]
    if absent:
        raise ExtensionError(
            f"API reference: {package}.__all__ lists {absent}, which {package} does not define; "
            f"import them in {package}/__init__.py or remove them from __all__."
        )
    return list(names)


def _data_doc(package: str, obj: object) -> tuple[str, list[str]] | None:
    """The module that assigns the data ``obj`` and the ``#:`` comment (or string) documenting it there."""
    for modname, module in sorted(sys.modules.items()):
        if not (modname == package or modname.startswith(package + ".")) or module is None:
            continue
        for attr, value in vars(module).items():
            if value is not obj:
                continue
            try:
                docs = ModuleAnalyzer.for_module(modname).find_attr_docs()
            except PycodeError:
                continue
            if ("", attr) in docs:
                return modname, list(docs[("", attr)])
    return None


def _undocumented(target: str, where: str) -> ExtensionError:
    return ExtensionError(f"API reference: {target} has no docstring; {where}.")


def _entry(target: str, obj: object, members: list[str] | None = None) -> list[str]:
    """The directive documenting ``obj`` under the dotted name ``target``."""
    if inspect.ismodule(obj):  # its docstring, then (a public module) each name of its __all__, by these rules
        lines = [f".. rubric:: Module ``{target}``", "", f".. automodule:: {target}", ""]
        for name in getattr(obj, "__all__", []) if members is None else members:
            lines += _entry(f"{target}.{name}", getattr(obj, name))
        return lines
    if inspect.isclass(obj) or callable(obj):
        own_doc = inspect.getdoc(obj) if inspect.isclass(obj) else obj.__doc__
        if not own_doc or (inspect.isclass(obj) and own_doc == inspect.getdoc(obj.__mro__[1])):
            raise _undocumented(target, f"write one (Google style) in {getattr(obj, '__module__', '?')}")
    if inspect.isclass(obj) and issubclass(obj, BaseException):
        return [f".. autoexception:: {target}", "   :show-inheritance:", ""]
    if inspect.isclass(obj):
        if members is None:
            options = ["   :members:", "   :inherited-members: Module, object"]
        else:
            options = [f"   :members: {', '.join(members)}"] if members else []
        return [f".. autoclass:: {target}", *options, ""]
    if callable(obj):
        return [f".. autofunction:: {target}", ""]
    modname, name = target.rsplit(".", 1)
    found = _data_doc(target.split(".")[0], obj)
    if found is None:
        raise _undocumented(target, "add a '#:' comment on the line above its assignment")
    lines = [f".. py:data:: {name}", f"   :module: {modname}", f"   :value: {obj!r}".replace("\n", " "), ""]
    return [*lines, *[f"   {line}" for line in found[1]], ""]


def _kind(obj: object) -> str:
    if inspect.isclass(obj):
        return "exception" if issubclass(obj, BaseException) else "class"
    return "function" if callable(obj) else "data"


def _summary(obj: object, package: str) -> str:
    if _kind(obj) == "data":
        found = _data_doc(package, obj)
        doc = "\n".join(found[1]) if found else ""
    else:
        doc = inspect.getdoc(obj) or ""
    return doc.strip().split("\n\n")[0].replace("\n", " ")


def _classes_in(annotation: Any, package: str) -> set[type]:
    found: set[type] = set()
    if inspect.isclass(annotation) and annotation.__module__.split(".")[0] == package:
        found.add(annotation)
    for arg in typing.get_args(annotation):
        found |= _classes_in(arg, package)
    return found


def signature_classes(obj: object, package: str) -> set[type]:
    """The classes of ``package`` that the signatures of ``obj`` (and, for a class, of its methods) name."""
    callables = [obj]
    if inspect.isclass(obj):
        callables += [v for k, v in vars(obj).items() if inspect.isfunction(v) and not k.startswith("_")]
        callables.append(obj.__init__)
    found: set[type] = set()
    for fn in callables:
        try:
            hints = typing.get_type_hints(fn)
        except Exception:  # an annotation that does not evaluate: autodoc shows it as text
            continue
        for hint in hints.values():
            found |= _classes_in(hint, package)
    return found


def _resolve(path: str) -> object:
    parent, _, name = path.rpartition(".")
    try:  # the attribute first: otseg.engine.evaluate is the function the package exports, not its module
        return getattr(importlib.import_module(parent), name)
    except (ImportError, AttributeError, ValueError):
        pass
    try:
        return pkgutil.resolve_name(path)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ExtensionError(f"API reference: the supporting name {path!r} (conf.py) does not import: {exc}") from exc


def page(package: str, title: str, intro: str, supporting: dict[str, list[str] | None]) -> str:
    """The reStructuredText of one package's reference page."""
    module = importlib.import_module(package)
    names = public_names(package)
    public = {id(getattr(module, name)) for name in names}
    lines = [title, "=" * len(title), "", intro, "", f".. py:currentmodule:: {package}", ""]
    lines += [".. list-table::", "   :header-rows: 1", "   :widths: 30 10 60", ""]
    lines += ["   * - name", "     - kind", "     - summary"]
    for name in names:
        obj = getattr(module, name)
        lines += [f"   * - :py:obj:`{package}.{name}`", f"     - {_kind(obj)}", f"     - {_summary(obj, package)}"]
    lines.append("")
    extra = dict(supporting)
    todo = [getattr(module, name) for name in names] + [_resolve(path) for path in supporting]
    seen = {id(_resolve(path)) for path in supporting}
    while todo:  # the classes named in signatures, and in theirs
        for cls in signature_classes(todo.pop(), package):
            if id(cls) not in public and id(cls) not in seen:
                seen.add(id(cls))
                extra.setdefault(f"{cls.__module__}.{cls.__qualname__}", [])
                todo.append(cls)
    for name in names:
        lines += [f"``{name}``", "-" * (len(name) + 4), "", *_entry(f"{package}.{name}", getattr(module, name))]
    if extra:
        lines += ["Supporting names", "-" * 16, ""]
        lines += ["Names the public API refers to (its arguments' and results' types, settings), where they live.", ""]
        for path in sorted(extra):
            lines += _entry(path, _resolve(path), extra[path])
    return "\n".join(lines)


def generate(app: Sphinx) -> None:
    """Write ``api/<package>.rst`` for each package (only when its text changed, so that rebuilds stay cheap)."""
    folder = Path(app.srcdir) / GENERATED
    folder.mkdir(exist_ok=True)
    for package, (title, intro) in app.config.api_packages.items():
        path = folder / f"{package}.rst"
        text = page(package, title, intro, app.config.api_supporting.get(package, {}))
        if not path.exists() or path.read_text() != text:
            path.write_text(text)


def check(app: Sphinx, env: BuildEnvironment) -> None:
    """Fail the build when a public name did not become an API entry (autodoc could not document it)."""
    objects = env.get_domain("py").objects
    missing = [
        f"{package}.{name}"
        for package in app.config.api_packages
        for name in public_names(package)
        if f"{package}.{name}" not in objects
    ]
    if missing:
        raise ExtensionError(
            f"API reference: no entry for {missing}: autodoc could not document them (see the warnings above: "
            "an import error or a docstring Sphinx cannot parse)."
        )


def public_alias(app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: nodes.Element) -> Any:
    """Resolve a reference that Sphinx's own rules miss, when it names exactly one entry of the reference.

    ``otseg.build.build_otseg`` (the module that defines a public object) resolves to ``otseg.build_otseg``; a
    short name written in a docstring (``PromptTransport``, ``OTSeg.transport``) resolves to the one entry of
    the packages whose dotted name ends with it.
    """
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    objects = env.get_domain("py").objects
    package = target.split(".")[0]
    if package not in app.config.api_packages:
        ends = [
            name for name in objects if name.endswith("." + target) and name.split(".")[0] in app.config.api_packages
        ]
        if len(ends) != 1:
            return None
        entry = objects[ends[0]]
        return make_refnode(app.builder, node["refdoc"], entry.docname, entry.node_id, contnode, ends[0])
    try:
        obj = pkgutil.resolve_name(target)
    except (ImportError, AttributeError, ValueError):
        return None
    module = importlib.import_module(package)
    for name in public_names(package):
        entry = objects.get(f"{package}.{name}")
        if getattr(module, name) is obj and entry is not None:
            return make_refnode(app.builder, node["refdoc"], entry.docname, entry.node_id, contnode, target)
    return None


def setup(app: Sphinx) -> dict[str, object]:
    """Register the generator, the completeness check and the alias resolution."""
    app.add_config_value("api_packages", {}, "env")
    app.add_config_value("api_supporting", {}, "env")
    app.connect("builder-inited", generate)
    app.connect("env-check-consistency", check)
    app.connect("missing-reference", public_alias)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
