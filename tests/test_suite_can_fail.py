"""The suite's own guards: checks that would let a broken rotoscope pass are themselves tested here.

- the one-line-error assertion rejects exit code 2, a second line and a traceback (a planted bug had errors exit 2
  with an extra line while `code != 0` and "the last line" checks passed);
- under CI (CI=true) a missing need fails instead of skipping;
- every subprocess a test starts has a timeout, so a hang fails instead of holding CI.
"""

import ast
from pathlib import Path

import pytest

from conftest import assert_one_line_error, require

TESTS = Path(__file__).resolve().parent


@pytest.mark.parametrize("code,err", [(2, "error: bad\n"), (0, "error: bad\n"), (1, "note: x\nerror: bad\n"),
                                      (1, "error: bad\nerror: again\n"), (1, "Traceback (most recent call last):\n"),
                                      (1, ""), (1, "bad\n")])
def test_the_one_line_assertion_rejects_what_the_promise_forbids(code, err):
    with pytest.raises(AssertionError):
        assert_one_line_error(code, "", err)


def test_the_one_line_assertion_accepts_the_promise():
    assert assert_one_line_error(1, "", "error: no such file: x.png\n", "no such file") == "error: no such file: x.png"


def test_a_missing_need_fails_under_ci_and_skips_elsewhere(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        require(False, "no Chromium")
    require(True, "present: nothing happens")
    for value in ("", "false", "0"):
        monkeypatch.setenv("CI", value)
        with pytest.raises(pytest.skip.Exception, match="no Chromium"):
            require(False, "no Chromium")


def _calls_without_timeout(source: str) -> list[int]:
    """Lines of subprocess.run/call/check_call/check_output calls with no timeout."""
    bad = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        name = node.func.attr
        owner = node.func.value
        is_subprocess = isinstance(owner, ast.Name) and owner.id == "subprocess" and name in (
            "run", "call", "check_call", "check_output")
        if is_subprocess and not any(k.arg == "timeout" for k in node.keywords):
            bad.append(node.lineno)
    return bad


def test_every_subprocess_in_the_suite_has_a_timeout():
    offenders = {str(p.relative_to(TESTS)): lines for p in sorted(TESTS.rglob("*.py"))
                 if (lines := _calls_without_timeout(p.read_text()))}
    assert not offenders, f"subprocess calls without a timeout: {offenders}"


def test_the_timeout_scan_finds_a_call_without_one():
    assert _calls_without_timeout("import subprocess\nsubprocess.run(['x'])\n") == [2]
    assert _calls_without_timeout("import subprocess\nsubprocess.run(['x'], timeout=5)\n") == []
