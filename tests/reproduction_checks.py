"""What every quick reproduction test asks of a run (shared by the test_reproductions_* files)."""

import json

from initjax import reproductions
from initjax.cli import main


def check_quick_run(tmp_path, name, files, known_failures=(), paper_heading=None):
    """Run ``name`` in quick mode into ``tmp_path``: ``report.json`` says done, every check passes
    except the ``known_failures`` (check-name prefixes: each must still fail, so the list stays
    true), the report's fields and ``files`` exist, and ``report.md`` marks failures exactly when
    there are some (and has ``paper_heading`` if given)."""
    report = reproductions.run(name, tmp_path, quick=True, progress=False)
    assert report["status"] == "done"
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["status"] == "done" and saved["name"] == name
    failed = {c["check"] for c in saved["checks"] if not c["pass"]}
    unexpected = {c for c in failed if not any(c.startswith(k) for k in known_failures)}
    assert not unexpected, unexpected
    for k in known_failures:
        assert any(c.startswith(k) for c in failed), f"{k!r} passes now: update the known failures"
    assert saved["all_pass"] == (not failed)
    for c in saved["checks"]:
        assert {"check", "measured", "pass"} <= set(c)
    for f in ("report.md", *files):
        assert (tmp_path / f).exists(), f
    text = (tmp_path / "report.md").read_text()
    assert ("**FAIL**" in text) == bool(failed)
    if paper_heading is not None:
        assert paper_heading in text


def check_listed(capsys, names):
    """``initjax reproduce --list`` lists every one of ``names``."""
    assert main(["reproduce", "--list"]) == 0
    listed = capsys.readouterr().out
    for name in names:
        assert name in listed
        assert reproductions.get(name).name == name
