"""The docs' code runs and prints what the docs say.

Every ```python block of a page under `docs/` that is written in doctest form
(`>>> ` prompts, expected output below) is run with `doctest`, in the order of the
page, in a fresh namespace and a temporary working directory, under JAX's default
(standard) promotion rules as users run it. `...` in an expected output matches
anything (doctest's ELLIPSIS), so a page can show `0.0017...`. Pages marked
`<!-- doctest: slow -->` (they train for minutes) run with `pytest -m slow`.
"""

import doctest
import pathlib
import re

import jax
import pytest


DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
_BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def _pages() -> list:
    params = []
    for page in sorted(DOCS.rglob("*.md")):
        text = page.read_text()
        if not any(">>> " in block for block in _BLOCK.findall(text)):
            continue
        marks = [pytest.mark.slow] if "<!-- doctest: slow -->" in text else []
        name = str(page.relative_to(DOCS))
        params.append(pytest.param(page, id=name, marks=marks))
    return params


def test_some_pages_are_checked():
    names = [p.id for p in _pages()]
    assert "getting-started.md" in names and "api/trainer.md" in names


@pytest.mark.parametrize("page", _pages())
def test_docs_page(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = "\n".join(b for b in _BLOCK.findall(page.read_text()) if ">>> " in b)
    test = doctest.DocTestParser().get_doctest(
        source, {"__name__": "__docs__"}, page.name, str(page), 0
    )
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    runner = doctest.DocTestRunner(optionflags=flags)
    report: list[str] = []
    with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
        result = runner.run(test, out=report.append, clear_globs=True)
    assert result.failed == 0, "".join(report)[-6000:]
