"""The package's metadata agrees with its files: one version, one licence."""

from pathlib import Path

import pytest

import sana_streaming

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

REPO = Path(__file__).resolve().parents[1]


def test_license_file_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text


def test_version_has_one_source():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" in config["project"]["dynamic"]
    assert config["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "sana_streaming.__version__"}
    assert sana_streaming.__version__.count(".") == 2


def test_every_export_resolves_and_the_errors_are_the_cli_ones():
    from sana_streaming.cli import runtime_errors

    for name in sana_streaming.__all__:
        assert getattr(sana_streaming, name) is not None, name
    import torch

    exported = [getattr(sana_streaming, name) for name in sana_streaming.__all__]
    assert all(error in exported for error in runtime_errors() if error is not torch.OutOfMemoryError)
