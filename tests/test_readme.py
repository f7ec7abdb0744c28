"""Every example and command in README.rst runs as written."""

import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.rst").read_text()


def code_blocks(language: str) -> list[str]:
    blocks = []
    pattern = re.compile(rf"^\.\. code-block:: {language}\n\n((?:    .*\n|\n)+)", re.MULTILINE)
    for match in pattern.finditer(README):
        lines = [line[4:] if line.startswith("    ") else line for line in match.group(1).splitlines()]
        blocks.append("\n".join(lines).strip() + "\n")
    return blocks


def test_readme_is_valid_restructuredtext() -> None:
    import docutils.core
    import docutils.writers.null

    # Warnings are errors: a broken table or literal would render as garbage on PyPI.
    docutils.core.publish_string(
        README, writer=docutils.writers.null.Writer(), settings_overrides={"report_level": 2, "halt_level": 2}
    )


def test_readme_has_examples() -> None:
    assert len(code_blocks("python")) >= 2
    assert any("$ curl" in block for block in code_blocks("console"))


@pytest.mark.parametrize("index", range(len(code_blocks("python"))))
def test_python_example_runs(index: int) -> None:
    source = code_blocks("python")[index]
    # A fresh interpreter per example: no state leaks between them.
    result = subprocess.run([sys.executable, "-c", source], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_python_example_output_matches() -> None:
    # A Python block followed by "It prints:" and a text block must print exactly that.
    pattern = re.compile(
        r"^\.\. code-block:: python\n\n((?:    .*\n|\n)+)It prints:\n\n\.\. code-block:: text\n\n((?:    .*\n|\n)+)",
        re.MULTILINE,
    )
    pairs = pattern.findall(README)
    assert pairs, "the quick start lost its printed output"
    for source, expected in pairs:
        code = "\n".join(line[4:] for line in source.splitlines())
        result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        wanted = [line[4:] for line in expected.strip("\n").splitlines()]
        assert result.stdout.splitlines() == wanted


def test_setup_commands_exist() -> None:
    blocks = code_blocks("console")
    two = next(block for block in blocks if "make demo" in block)
    assert [line.split()[1] for line in two.splitlines() if line.startswith("make ")] == ["demo", "test"]
    makefile = (ROOT / "Makefile").read_text()
    mentioned = set(re.findall(r"``make ([a-z-]+)``", README)) | {"demo", "test"}
    for target in mentioned:
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), f"README names make {target}, Makefile has none"
    for target in ("demo", "test"):
        subprocess.run(["make", "-n", target], cwd=ROOT, check=True, capture_output=True)
    commands = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    installs = [command for command in commands if command.startswith("pip install")]
    assert installs == ["pip install 'fastapi-intelligent-cache[redis]'", "pip install httpx2"]
    setup_cfg = (ROOT / "setup.cfg").read_text()
    assert "name = fastapi-intelligent-cache" in setup_cfg
    assert re.search(r"^redis =", setup_cfg, re.MULTILINE)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def demo_server(tmp_path: Path):
    port = _free_port()
    log = (tmp_path / "uvicorn.log").open("wb")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("IC_REDIS_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "example_app.main:app", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        process.kill()
        process.wait()
        log.close()
        pytest.fail("demo server did not start: " + (tmp_path / "uvicorn.log").read_text())
    yield port
    process.terminate()
    process.wait(timeout=10)
    log.close()


def test_curl_session_matches_readme(demo_server: int) -> None:
    if not any("$ curl" in block for block in code_blocks("console")):
        pytest.fail("README lost its curl session")
    session = next(block for block in code_blocks("console") if "$ curl" in block)
    command, expected = None, []
    steps: list[tuple[str, list[str]]] = []
    for line in session.splitlines():
        if line.startswith("$ "):
            if command is not None:
                steps.append((command, expected))
            command, expected = line[2:], []
        elif command is not None:
            expected.append(line)
    if command is not None:
        steps.append((command, expected))
    assert len(steps) >= 2
    for command, lines in steps:
        shlex.split(command)  # well-formed
        live = command.replace("127.0.0.1:8000", f"127.0.0.1:{demo_server}")
        result = subprocess.run(["bash", "-c", live], capture_output=True, text=True, timeout=30)
        output = [line.rstrip("\r") for line in result.stdout.splitlines()]
        assert output == lines, f"{command!r} printed {output!r}"
