"""``python -m bench.conformance``: the HTTP caching test suite of cache-tests.fyi against example_app's proxy.

What it does, from nothing but the project venv, node/npm and the npm registry:

1. installs the suite's npm package, ``http-cache-tests@0.4.5``, into ``.conformance/`` (once);
2. starts its origin server (``server/server.mjs``, bound to 127.0.0.1 through a preload, since
   the server itself listens on every interface) and ``example_app.examples.http_proxy`` under
   uvicorn (h11, no Date/Server header of its own, no upstream keep-alive: ``bench/conformance_app.py``)
   with ``UPSTREAM_URL`` pointing at the origin;
3. runs the suite's CLI through the proxy (``npm run --silent cli --base=http://127.0.0.1:PORT``)
   and saves its JSON to ``.conformance/results.json``;
4. prints, for the *required* tests, our score beside the results the package ships for reverse
   proxies and CDNs, and the required tests we fail, by suite.

"Required" is the suite's own rule (``lib/display.mjs``, ``determineTestResult``; in the suite's
git repository it has since moved to ``test-engine/lib/results.mjs``): a test whose
``kind`` is ``"required"`` or absent. Tests marked ``browser_only`` are left out: the CLI never
runs them. Two scorings:

- *one by one*: a test counts when its result is ``true``;
- *with dependencies*: what cache-tests.fyi shows (``index.html`` renders each cell with
  ``lib/summary.mjs`` -> ``display.showTestResult`` -> ``determineTestResult(..., honorDependencies
  = true)``): a test counts only if it passed and every test in its ``depends_on`` is itself, by
  the same rule applied recursively, a pass (or a "yes" for a ``check`` test). :func:`outcome`
  ports that function line by line.

Processes are started in their own sessions and ended (their process groups) on exit, on
Ctrl-C and on SIGTERM. Re-run it after changing the package: the install is reused.
"""

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".conformance"
SUITE = "http-cache-tests"
VERSION = "0.4.5"
PACKAGE = WORK / "node_modules" / SUITE
#: ``example_app.examples.http_proxy`` without upstream keep-alive (see bench/conformance_app.py for why).
PROXY_FACTORY = "bench.conformance_app:create"
#: The shipped results shown beside ours (browsers are not comparable to a shared cache).
PEER_TYPES = ("rev-proxy", "cdn")

# Loaded with ``node -r``: the origin server calls ``listen(port)``, i.e. on every interface.
_LOOPBACK_PRELOAD = """\
const http = require('http')
const listen = http.Server.prototype.listen
http.Server.prototype.listen = function (port, ...rest) {
  if (typeof port !== 'number' && typeof port !== 'string') return listen.call(this, port, ...rest)
  return listen.call(this, port, '127.0.0.1', ...rest)
}
"""

# Prints the suite exactly as the CLI runs it (cli.mjs adds surrogate-control to tests/index.mjs),
# and the index of the shipped results.
_DESCRIBE = """\
import tests from './tests/index.mjs'
import surrogate from './tests/surrogate-control.mjs'
import index from './results/index.mjs'
tests.push(surrogate)
const suite = []
for (const s of tests) for (const t of s.tests) {
  suite.push({suite: s.id, suite_name: s.name, id: t.id, name: t.name, kind: t.kind ?? null,
    depends_on: t.depends_on ?? [], browser_only: t.browser_only === true})
}
console.log(JSON.stringify({suite, index}))
"""

PASS_TYPES = frozenset({"pass", "yes"})


@dataclass(frozen=True, slots=True)
class Test:
    """One test definition of the suite."""

    id: str
    name: str
    suite: str
    suite_name: str
    kind: str | None
    depends_on: tuple[str, ...]
    browser_only: bool

    @property
    def required(self) -> bool:
        return self.kind in (None, "required")


Results = Mapping[str, Any]


def outcome(tests: Mapping[str, Test], test_id: str, results: Results, honor_dependencies: bool = True) -> str:
    """``determineTestResult`` of the suite's ``lib/display.mjs`` (0.4.5), as the name of the result type."""
    test = tests[test_id]
    result = results.get(test_id)
    if result is None:
        return "untested"
    if honor_dependencies:
        for dependency in test.depends_on:
            if outcome(tests, dependency, results) not in PASS_TYPES:
                return "dependency_fail"
    if isinstance(result, list) and result and result[0] == "Setup":
        return "retry" if len(result) > 1 and result[1] == "retry" else "setup_fail"
    if result is False:
        return "harness_fail"
    if test.kind in (None, "required"):
        return "pass" if result is True else "fail"
    if test.kind == "optimal":
        return "pass" if result is True else "optional_fail"
    if test.kind == "check":
        return "yes" if result is True else "no"
    raise ValueError(f"unknown test kind {test.kind!r} of {test_id}")


def scores(tests: Mapping[str, Test], results: Results) -> tuple[int, int, int]:
    """Required tests passed one by one, passed with their dependencies, and how many there are."""
    required = [test.id for test in tests.values() if test.required and not test.browser_only]
    alone = sum(outcome(tests, test_id, results, honor_dependencies=False) == "pass" for test_id in required)
    together = sum(outcome(tests, test_id, results) == "pass" for test_id in required)
    return alone, together, len(required)


# -- processes -----------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _process(
    command: Sequence[str], *, cwd: Path, env: Mapping[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A process in a session of its own, its whole group ended when the block exits."""
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, cwd=cwd, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield process
    finally:
        _end(process)


def _end(process: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)  # its own group: start_new_session made pid the group id
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{log.read_text(errors='replace')}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(
        f"{what} did not listen on port {port} within {timeout:.0f} s:\n{log.read_text(errors='replace')}"
    )


def _unwind_on_signals() -> None:
    """SIGINT and SIGTERM raise KeyboardInterrupt, so every ``finally`` above ends its processes.

    Set for SIGINT too: a shell starting this in the background leaves SIGINT ignored.
    """

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, interrupt)


# -- the suite -----------------------------------------------------------------------------------------------------


def install() -> None:
    """Install the suite into ``.conformance/`` unless that version is there already."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(
            f"bench.conformance needs {' and '.join(missing)} on PATH (Debian: apt-get install nodejs npm)"
        )
    manifest = PACKAGE / "package.json"
    if manifest.exists() and json.loads(manifest.read_text()).get("version") == VERSION:
        return
    WORK.mkdir(exist_ok=True)
    # A manifest of its own, so npm installs here and not into a parent project.
    (WORK / "package.json").write_text(json.dumps({"name": "conformance", "private": True}) + "\n")
    print(f"Installing {SUITE}@{VERSION} into {WORK.relative_to(ROOT)}/ ...", flush=True)
    subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", f"{SUITE}@{VERSION}"], cwd=WORK, check=True
    )


def describe() -> tuple[dict[str, Test], list[dict[str, Any]]]:
    """The suite's tests by id, and the index of its shipped results."""
    output = subprocess.run(
        ["node", "--input-type=module", "-e", _DESCRIBE], cwd=PACKAGE, check=True, capture_output=True, text=True
    ).stdout
    data = json.loads(output)
    tests = {
        item["id"]: Test(
            id=item["id"],
            name=item["name"],
            suite=item["suite"],
            suite_name=item["suite_name"],
            kind=item["kind"],
            depends_on=tuple(item["depends_on"]),
            browser_only=item["browser_only"],
        )
        for item in data["suite"]
    }
    return tests, data["index"]


def run_suite(*, test_id: str = "", timeout: float = 900.0) -> Results:
    """Origin and proxy up, the CLI through the proxy, everything down again; the CLI's results."""
    origin_port, proxy_port = _free_port(), _free_port()
    preload = WORK / "loopback.cjs"
    preload.write_text(_LOOPBACK_PRELOAD)
    origin_env = {
        "npm_config_protocol": "http",
        "npm_config_port": str(origin_port),
        "npm_config_pidfile": str(WORK / "origin.pid"),
    }
    proxy_command = [
        sys.executable,
        "-m",
        "uvicorn",
        PROXY_FACTORY,
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(proxy_port),
        "--http",
        "h11",
        "--no-date-header",
        "--no-server-header",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    proxy_env = {"UPSTREAM_URL": f"http://127.0.0.1:{origin_port}", "PYTHONPATH": str(ROOT)}
    origin_log, proxy_log, cli_log = WORK / "origin.log", WORK / "proxy.log", WORK / "cli.log"
    origin_command = ["node", "-r", str(preload), "server/server.mjs"]
    with (
        _process(origin_command, cwd=PACKAGE, env=origin_env, log=origin_log) as origin,
        _process(proxy_command, cwd=ROOT, env=proxy_env, log=proxy_log) as proxy,
    ):
        _wait_for_port(origin_port, origin, "the origin server", origin_log)
        _wait_for_port(proxy_port, proxy, "the proxy", proxy_log)
        print(f"origin on :{origin_port}, proxy on :{proxy_port}; running the suite (about 20 s) ...", flush=True)
        cli = ["npm", "run", "--silent", "cli", f"--base=http://127.0.0.1:{proxy_port}"]
        if test_id:
            cli.append(f"--id={test_id}")
        with open(cli_log, "wb") as errors:
            process = subprocess.Popen(cli, cwd=PACKAGE, stdout=subprocess.PIPE, stderr=errors, start_new_session=True)
            try:
                output, _ = process.communicate(timeout=timeout)
            finally:
                _end(process)
    if test_id:
        sys.stdout.write(output.decode(errors="replace"))
        return {}
    if process.returncode != 0 or not output.strip():
        raise RuntimeError(f"the suite's CLI failed ({process.returncode}):\n{cli_log.read_text(errors='replace')}")
    results: dict[str, Any] = json.loads(output)
    return results


# -- report --------------------------------------------------------------------------------------------------------


def _short(result: Any, limit: int = 110) -> str:
    text = json.dumps(result) if not isinstance(result, list) else ": ".join(str(part) for part in result)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def report(tests: Mapping[str, Test], ours: Results, index: Sequence[Mapping[str, Any]]) -> str:
    """The score table and our failing required tests."""
    rows = [("intelligent-cache proxy", "this run", *scores(tests, ours))]
    for item in index:
        if item.get("type") in PEER_TYPES:
            shipped = json.loads((PACKAGE / "results" / item["file"]).read_text())
            rows.append((str(item["name"]), str(item.get("version", "")), *scores(tests, shipped)))
    total = rows[0][4]
    lines = [
        f"Required tests of {SUITE} {VERSION} ({total}; kind 'required' or unset, browser-only ones left out)",
        "",
        f"{'Cache':<26}{'Version':<22}{'One by one':>14}{'With dependencies':>20}",
    ]
    for name, version, alone, together, count in rows:
        lines.append(f"{name:<26}{version[:21]:<22}{f'{alone}/{count}':>14}{f'{together}/{count}':>20}")
    failing = [
        test
        for test in tests.values()
        if test.required and not test.browser_only and outcome(tests, test.id, ours, honor_dependencies=False) != "pass"
    ]
    lines += ["", f"Required tests the proxy fails one by one ({len(failing)}), by suite:"]
    suite = None
    for test in sorted(failing, key=lambda test: (test.suite, test.id)):
        if test.suite != suite:
            suite = test.suite
            lines.append(f"  [{suite}] {test.suite_name}")
        result = ours.get(test.id)
        lines.append(f"    {test.id}: {outcome(tests, test.id, ours, honor_dependencies=False)} - {_short(result)}")
    return "\n".join(lines)


_UPSTREAM_ERROR = re.compile(r"upstream (?:error|timeout): (\S+) b'([^']*)': (.*)$")


def proxy_problems(log: Path) -> list[str]:
    """What the proxy logged: upstream errors it answered 502/504 for, and server tracebacks' last lines."""
    if not log.exists():
        return []
    lines = log.read_text(errors="replace").splitlines()
    problems = []
    for number, line in enumerate(lines):
        match = _UPSTREAM_ERROR.search(line)
        if match:
            problems.append(f"{match.group(1)} {match.group(3)}")
        elif line.startswith("Traceback") or line.startswith("ERROR"):
            tail = next((later for later in lines[number + 1 :] if later and not later.startswith(" ")), line)
            problems.append(tail)
    return problems


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.conformance", description=__doc__.splitlines()[0])
    parser.add_argument("--id", default="", help="run only this test and print its requests and responses")
    parser.add_argument("--report-only", action="store_true", help="print the report of the saved results")
    args = parser.parse_args(argv)
    _unwind_on_signals()
    install()
    tests, index = describe()
    saved = WORK / "results.json"
    if args.report_only:
        ours: Results = json.loads(saved.read_text())
    else:
        ours = run_suite(test_id=args.id)
        if args.id:
            return
        saved.write_text(json.dumps(ours, indent=2) + "\n")
        print(f"results saved to {saved.relative_to(ROOT)}\n")
    print(report(tests, ours, index))
    problems = proxy_problems(WORK / "proxy.log")
    if problems:
        print(f"\nWhat the proxy logged ({len(problems)} lines, .conformance/proxy.log), by kind:")
        for problem, times in Counter(problems).most_common():
            print(f"  {times:>3} x {problem[:150]}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted: the origin and the proxy are stopped", file=sys.stderr)
        sys.exit(130)
