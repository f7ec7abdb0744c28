"""The sdist is complete: it carries the suite and runs it, with clean metadata."""

import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (archive,) = out.glob("*.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(out, filter="data")
    (tree,) = (path for path in out.iterdir() if path.is_dir())
    return tree


def test_the_sdist_holds_what_its_tests_import(sdist: Path) -> None:
    for name in (
        "tests/__init__.py",
        "tests/conftest.py",
        "tests/redis_servers.py",
        "example_app/main.py",
        "bench/faults.py",
        "intelligent_cache/py.typed",
        "intelligent_cache/admin/dashboard.html",
        "CHANGELOG.rst",
        "Makefile",
    ):
        assert (sdist / name).is_file(), name
    assert not list(sdist.rglob("__pycache__"))


def test_the_metadata_uses_an_spdx_expression_and_names_the_supported_pythons(sdist: Path) -> None:
    metadata = (sdist / "PKG-INFO").read_text()
    assert "License-Expression: MIT" in metadata
    assert "License ::" not in metadata  # license classifiers are deprecated
    assert "Classifier: Programming Language :: Python :: 3.13" in metadata
    assert "Author: intelligent-cache maintainers" in metadata
    assert "Project-URL: Documentation, https://pypi.org/project/fastapi-intelligent-cache/" in metadata
    assert "Project-URL: Changelog, https://pypi.org/project/fastapi-intelligent-cache/#changelog" in metadata


def test_the_long_description_carries_the_changelog_and_is_valid_rst(sdist: Path) -> None:
    # PyPI renders the README followed by the changelog: the Changelog URL points at its section.
    import docutils.core
    import docutils.utils

    from intelligent_cache import __version__

    description = (sdist / "PKG-INFO").read_text().split("\n\n", 1)[1]
    assert "\nChangelog\n" in description
    assert f"\n{__version__} (" in description  # the released version has its dated entry
    document = docutils.core.publish_doctree(
        description, settings_overrides={"report_level": docutils.utils.Reporter.WARNING_LEVEL, "halt_level": 5}
    )
    # Sections named alike in both ("Safety"...) are INFO-level notes, not problems.
    problems = [node.astext() for node in document.findall(docutils.nodes.system_message) if node["level"] >= 2]
    assert problems == []
    assert "changelog" in {name for node in document.findall(docutils.nodes.section) for name in node["ids"]}


def test_the_sdist_runs_its_own_tests(sdist: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_keys.py", "tests/test_lru.py"],
        cwd=sdist,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
