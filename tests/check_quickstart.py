"""The README's install and quick start in a clean venv, exactly as written.

``python -m tests.check_quickstart`` (``make quickstart``): a new venv gets the
README's ``pip install`` lines, with this checkout standing in for the PyPI
name, then runs the quick start from an empty directory and compares what it
prints with the README. Nothing from the development venv leaks in.
"""

import re
import shlex
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.rst").read_text()
PROJECT = "fastapi-intelligent-cache"


def install_commands() -> list[list[str]]:
    """The arguments of every ``pip install`` line of the README, in order."""
    commands = []
    for line in README.splitlines():
        command = line.strip().split("#")[0].strip()
        if command.startswith("pip install "):
            commands.append(shlex.split(command)[2:])
    return commands


def quick_start() -> tuple[str, list[str]]:
    """The quick start's source and the lines the README says it prints."""
    start = README.find("\nQuick start\n===")
    pattern = re.compile(
        r"^\.\. code-block:: python\n\n((?:    .*\n|\n)+)It prints:\n\n\.\. code-block:: text\n\n((?:    .*\n|\n)+)",
        re.MULTILINE,
    )
    match = pattern.search(README, start) if start >= 0 else None
    if match is None:
        raise SystemExit("README.rst has no quick start followed by 'It prints:'")
    source = "\n".join(line[4:] for line in match.group(1).splitlines())
    return source, [line[4:] for line in match.group(2).strip("\n").splitlines()]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env_dir, work = Path(tmp) / "venv", Path(tmp) / "work"
        work.mkdir()
        venv.create(env_dir, with_pip=True)
        python = str(env_dir / "bin" / "python")
        for arguments in install_commands():
            local = [str(ROOT) + item[len(PROJECT) :] if item.startswith(PROJECT) else item for item in arguments]
            print("pip install", *arguments, flush=True)
            subprocess.run([python, "-m", "pip", "install", "--quiet", *local], check=True)
        source, expected = quick_start()
        result = subprocess.run([python, "-c", source], cwd=work, capture_output=True, text=True, timeout=120)
        if result.returncode != 0 or result.stdout.splitlines() != expected:
            print(result.stdout, result.stderr, sep="\n", file=sys.stderr)
            raise SystemExit(f"the quick start printed something else than the README says:\n{expected}")
        print("quick start: as the README says, in a clean venv")


if __name__ == "__main__":
    main()
