"""Build ``docs/gallery.md`` from the reports of full reproduction runs.

    python experiments/gallery.py [--results results] [--docs docs]

For every reproduction whose ``RESULTS/NAME/report.json`` says ``"status": "done"``, copies its
main figures into ``DOCS/img/`` and writes a section with the command that made them, the run's
time and mode, and each check with its measured value and verdict, taken from the report (so the
gallery never says more than the runs did). Reproductions without a finished report are listed as
not run.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from initjax import _io, reproductions
from initjax.reproductions import _reports

# the figures shown per reproduction (stems of the PNGs it writes), in order
FIGURES = {
    "seed-demo": ["variance-curves", "hist-tanh-n-0-0-01-2", "hist-tanh-n-0-1", "hist-tanh-xavier", "hist-relu-he"],
    "seed-batchnorm": ["std-by-layer", "hist-bn", "bn-eval"],
    "seed-activations": ["hist-activations", "curves", "dead-relu"],
    "phase-diagram": ["phase-diagram", "correlations"],
    "schoenholz2017-trainability": ["trainability"],
    "glorot2010-histograms": ["fig6-activations", "fig7-gradients", "fig8-weight-gradients"],
    "glorot2010-saturation": ["fig2-sigmoid", "fig3-tanh-softsign", "fig4-histograms"],
    "glorot2010-table1": ["test-error"],
    "he2015-deep-relu": ["variance-at-init", "curves"],
    "ioffe2015-mnist": ["figure1"],
    "saxe2014-spectra": ["spectra", "spread"],
    "yang2019-bn-gradients": ["bn-gradients"],
    "selu-fixed-point": ["fixed-point"],
    "yang2017-residual-meanfield": ["residual-meanfield"],
    "desmith2020-skipinit": ["variance-at-init", "training"],
    "zhang2019-fixup": ["gradient-norms", "training"],
    "brock2021-spp": ["spp-conv", "spp-bn", "spp-nf"],
    "yang2021-coord-check": ["coord-check-mlp", "coord-check-resmlp", "coord-check-transformer"],
    "yang2022-mutransfer": ["width_transfer", "depth_transfer"],
    "dong2021-rank-collapse": ["rank-collapse"],
    "noci2022-signal-propagation": ["signal-propagation"],
    "xiong2020-layernorm": ["gradient-norms", "training"],
}


def _section(name: str, report: dict, figures: list[str]) -> list[str]:
    rep = reproductions.get(name)
    checks = report.get("checks", [])
    passed = sum(bool(c["pass"]) for c in checks)
    mode = "quick mode" if report.get("quick") else "full mode"
    lines = [f"## {name}", "", rep.summary, "", "```bash", f"initjax reproduce {name} --out results/{name}",
             "```", "", f"{mode}: **{passed}/{len(checks)} checks pass**; the full report, with the "
             "paper's numbers beside ours and where they differ, is `report.md` in the output directory.", ""]
    lines += [f"![{name}: {stem}](img/{name}-{stem}.png)" for stem in figures]
    lines += ["", *_reports.checks_table(checks, "### Checks"), ""]
    return lines


def build(results: Path, docs: Path) -> Path:
    """Copy the figures and write ``docs/gallery.md``; returns its path."""
    (docs / "img").mkdir(parents=True, exist_ok=True)
    lines = ["# Gallery", "", "Every figure here was made by the command above it, in full mode, on CPU; the "
             "checks are copied from each run's `report.json` by `python experiments/gallery.py`.", ""]
    missing = []
    for name in reproductions.names():
        path = results / name / "report.json"
        report = json.loads(path.read_text()) if path.is_file() else {}
        if report.get("status") != "done":
            missing.append(name)
            continue
        shown = []
        for stem in FIGURES.get(name, []):
            png = results / name / f"{stem}.png"
            if png.is_file():
                shutil.copyfile(png, docs / "img" / f"{name}-{stem}.png")
                shown.append(stem)
        lines += _section(name, report, shown)
    if missing:
        lines += ["## Not run for this gallery", "", *[f"- {n}" for n in missing], ""]
    out = docs / "gallery.md"
    _io.write_text(out, "\n".join(lines))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=Path("results"))
    p.add_argument("--docs", type=Path, default=Path("docs"))
    a = p.parse_args()
    print(build(a.results, a.docs))


if __name__ == "__main__":
    main()
