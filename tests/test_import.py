"""Import-time contracts: dependency direction, version, public names."""

import ast
import json
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

import sciinr
import sciinr.metrics
import sciinr.nn


def _reexported_names(module) -> list[str]:
    """The `X as X` names re-exported by a package's `__init__.py`."""
    tree = ast.parse(pathlib.Path(module.__file__).read_text())
    names = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            names.extend(alias.asname or alias.name for alias in node.names)
    return names


@pytest.fixture(scope="module")
def fresh_import() -> dict:
    """Import the package in a fresh interpreter and report what happened."""
    code = f"""
        import json, sys
        import jax

        def config():
            return [
                jax.config.jax_enable_x64,
                jax.config.jax_numpy_dtype_promotion,
                jax.config.jax_numpy_rank_promotion,
                str(jax.config.jax_default_matmul_precision),
            ]

        before = config()
        import sciinr, sciinr.nn, sciinr.metrics
        from sciinr.nn import {", ".join(_reexported_names(sciinr.nn))}
        print(json.dumps({{
            "problems": sorted(m for m in sys.modules if m.split(".")[0] == "problems"),
            "version": sciinr.__version__,
            "config_before": before,
            "config_after": config(),
        }}))
        """
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_sciinr_does_not_import_problems(fresh_import):
    assert fresh_import["problems"] == []


def test_version_is_the_installed_distribution(fresh_import):
    # The version comes from the package metadata (pyproject.toml), the same in a
    # fresh interpreter as here.
    import importlib.metadata

    assert fresh_import["version"] == importlib.metadata.version("sciinr")
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", fresh_import["version"])


def test_import_sets_no_global_jax_config(fresh_import):
    # Only tests/conftest.py and example scripts set jax.config.
    assert fresh_import["config_after"] == fresh_import["config_before"]


def test_every_public_nn_name_is_importable(fresh_import):
    # `fresh_import` also imported every one of them by name in a fresh interpreter.
    names = _reexported_names(sciinr.nn)
    expected = {
        "apply",
        "AbstractEncoding",
        "AbstractField",
        "COORDS",
        "CoordinateBatchNorm",
        "CoordinateMLP",
        "FactorizedLinear",
        "FourierFeatures",
        "freeze_statistics",
        "has_batch_statistics",
        "make_linear",
        "make_norm",
        "num_parameters",
        "PositionalEncoding",
        "Siren",
        "trainable",
    }
    assert expected <= set(names)
    for name in names:
        assert not name.startswith("_"), name
        # Each name is defined in a private module of sciinr.nn (re-exported, never
        # a stray import such as `jax`).
        value = getattr(sciinr.nn, name)
        module = getattr(value, "__module__", None) or type(value).__module__
        if not isinstance(value, str | dict):
            assert module.startswith("sciinr.nn._"), (name, module)


def test_metrics_names():
    names = _reexported_names(sciinr.metrics)
    assert {"psnr", "relative_l2"} <= set(names)
    for name in names:
        assert callable(getattr(sciinr.metrics, name)), name
