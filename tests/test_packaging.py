"""What a user installs is what we say it is.

The version has one source (``__version__``, read by the build); the license
file matches the declared license; the project URLs agree with the docs site;
the built wheel holds the package, its ``py.typed`` marker and the license.
scripts/test.sh builds the sdist and wheel (``python -m build``) and points
``MAILPOOL_DIST`` at them for the last test.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest

import mailpool
import typing_usage
from mailpool import InMemoryStorage
from mailpool.testing import RecordingTransport

ROOT = Path(__file__).resolve().parent.parent


def pyproject() -> dict[str, Any]:
    tomllib = pytest.importorskip("tomllib")
    data: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return data


def mkdocs_setting(name: str) -> str:
    text = (ROOT / "mkdocs.yml").read_text()
    found = re.search(rf"^{name}:\s*(\S+)\s*$", text, re.MULTILINE)
    assert found, f"mkdocs.yml has no {name}"
    return found.group(1)


def test_the_version_has_one_source_read_by_the_build() -> None:
    project = pyproject()
    assert "version" not in project["project"]
    assert project["project"]["dynamic"] == ["version"]
    source = ROOT / project["tool"]["hatch"]["version"]["path"]
    assert source == ROOT / "src" / "mailpool" / "__init__.py"
    assert f'__version__ = "{mailpool.__version__}"' in source.read_text()


def test_the_installed_metadata_has_the_package_version() -> None:
    # Fails after a version bump until `pip install -e .` runs again
    # (scripts/test.sh reinstalls when pyproject.toml or __version__ changes).
    assert importlib.metadata.version("mailpool") == mailpool.__version__


def test_the_version_is_a_release_number_with_a_changelog_section() -> None:
    version = mailpool.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+((a|b|rc)\d+)?", version), version
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert re.search(
        rf"^## \[{re.escape(version)}\] - \d{{4}}-\d\d-\d\d$", changelog, re.M
    )
    assert "## [Unreleased]" in changelog


def test_the_license_file_matches_the_declared_license() -> None:
    assert pyproject()["project"]["license"] == "MIT"
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n")
    assert "Permission is hereby granted, free of charge" in text
    metadata = importlib.metadata.metadata("mailpool")
    assert metadata["License-Expression"] == "MIT"


def test_the_project_urls_agree_with_the_docs_site() -> None:
    urls = pyproject()["project"]["urls"]
    assert urls["Documentation"] == mkdocs_setting("site_url")
    assert urls["Source"] == mkdocs_setting("repo_url")
    assert urls["Changelog"] == f"{urls['Source']}/blob/main/CHANGELOG.md"
    assert urls["Issues"] == f"{urls['Source']}/issues"
    installed = importlib.metadata.metadata("mailpool").get_all("Project-URL") or []
    assert {f"{label}, {url}" for label, url in urls.items()} <= set(installed)


def test_the_typing_usage_file_also_runs() -> None:
    accounts = typing_usage.build_accounts()
    assert isinstance(accounts[0].tags, frozenset)
    assert [a.tags for a in accounts[:2]] == [{"spring-campaign"}, {"other"}]
    storage = InMemoryStorage()
    storage.add(accounts[0])
    transport = RecordingTransport()
    results = typing_usage.send_through(storage, transport)
    assert [r.account_email for r in results] == ["alice@example.com"] * 2
    assert len(transport.sent) == 2
    assert isinstance(typing_usage.open_memory(), InMemoryStorage)


@pytest.mark.skipif(
    not os.environ.get("MAILPOOL_DIST"), reason="MAILPOOL_DIST (built by test.sh)"
)
def test_the_built_wheel_ships_the_package_typed_and_licensed() -> None:
    dist = Path(os.environ["MAILPOOL_DIST"])
    version = mailpool.__version__
    wheel = dist / f"mailpool-{version}-py3-none-any.whl"
    assert (dist / f"mailpool-{version}.tar.gz").is_file()
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(f"mailpool-{version}.dist-info/METADATA").decode()
    assert {"mailpool/__init__.py", "mailpool/py.typed"} <= names
    assert f"mailpool-{version}.dist-info/licenses/LICENSE" in names
    assert not any(name.startswith(("tests/", "docs/", "examples/")) for name in names)
    assert f"Version: {version}\n" in metadata
    assert "License-Expression: MIT\n" in metadata
    assert "Project-URL: Documentation, " in metadata
    # The storage contract suite ships for authors of custom backends.
    assert {"mailpool/testing/__init__.py", "mailpool/testing/storage.py"} <= names
