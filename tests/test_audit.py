"""The reliability audit (issue 17): every bad input of tests/audit_inputs.py gets its one-line
message, with no traceback and no hang (a case that runs past 30 s fails)."""

from __future__ import annotations

import contextlib
import re
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from audit_inputs import CASES  # noqa: E402

_LIMIT_S = 30


@contextlib.contextmanager
def _deadline(seconds: int):
    """A hang becomes a failure (SIGALRM; the tests run in the main thread)."""

    def fail(*_):
        raise TimeoutError(f"no answer within {seconds} s: a hang")

    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_audit_is_large():
    assert len(CASES) >= 100
    assert len({c[0] for c in CASES}) == len(CASES), "case ids must be unique"


@pytest.mark.parametrize(("kind", "spec", "expected", "pattern"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input(kind, spec, expected, pattern, tmp_path, capsys):
    if kind == "cli":
        from initjax.cli import main

        f = tmp_path / "a_file"
        f.write_text("not a directory\n")
        argv = [a.replace("{file}", str(f)).replace("{tmp}", str(tmp_path / "t")) for a in spec]
        capsys.readouterr()
        with _deadline(_LIMIT_S):
            try:
                code = main(argv)
            except SystemExit as e:  # argparse
                code = e.code
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == expected, err
        assert len(lines) == 1, f"want one stderr line, got {len(lines)}:\n{err}"
        assert lines[0].startswith("initjax: error: "), lines[0]
        assert re.search(pattern, lines[0]), f"{pattern!r} not in {lines[0]!r}"
        return
    call = spec(tmp_path) if kind == "file" else spec
    with _deadline(_LIMIT_S), pytest.raises(expected) as info:
        call()
    message = str(info.value)
    assert "\n" not in message.strip(), f"want a one-line message, got:\n{message}"
    assert re.search(pattern, message), f"{pattern!r} not in {message!r}"
