"""The ``yang2021-coord-check`` reproduction: quick mode end to end (every check passes: muP flat,
SP growing, for MLPs and residual MLPs under SGD and Adam), its networks, and its listing.

Its quick mode runs the MLP at the widths 64, 256, 1024 that ``tests/test_coordcheck.py`` also
uses, so in one pytest process the two files share their compiled programs.
"""

import json

import numpy as np
import pytest
from reproduction_checks import check_listed, check_quick_run

from initjax import coordcheck, parametrization
from initjax.reproductions import yang2021_coord_check as yang

NAME = "yang2021-coord-check"
FILES = ("coord-check-mlp.png", "coord-check-mlp.pdf", "coord-check-resmlp.png",
         "coord-check-resmlp.pdf", "coord-check-transformer.png",
         "data/mlp-adam-mup/coord_check.json", "data/resmlp-sgd-sp/coord_check.npz",
         "data/transformer-adam-mup-sqrt-logit/coord_check.json")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("yang2021")
    check_quick_run(out, NAME, FILES, paper_heading="Beside the paper")
    return json.loads((out / "report.json").read_text())


def test_quick_run_passes_every_check(quick):
    assert quick["all_pass"] and quick["quick"] and quick["seeds"] == 4
    arms = {(a["arch"], a["optimizer"], a["parametrization"]) for a in quick["arms"]}
    assert arms == {(a, o, p) for a in ("mlp", "resmlp") for o in ("sgd", "adam")
                    for p in ("sp", "mup")} | {("transformer", "adam", p)
                                               for p in yang.TRANSFORMER_PARAMETRIZATIONS}
    # every arm's slopes are the fitter's, of the saved statistic
    for a in quick["arms"]:
        np.testing.assert_allclose(a["slope"], coordcheck.fit_slope(a["widths"], a["l1"]),
                                   rtol=1e-12)
        assert a["layers"][-1] == "readout" and a["diverged"] == 0
    # the README comparison is reported with its figure
    readme = [c for c in quick["checks"] if "mup README" in c["check"]]
    assert len(readme) == 1 and 0.5 <= readme[0]["measured"] <= 1.5


def test_residual_network_is_parametrized_per_role():
    net = yang.network("resmlp", "mup", 256, optimizer="adam", base_width=64, blocks=2)
    assert coordcheck.layer_names(net) == ("hidden1", "res2/branch", "res2", "res3/branch",
                                           "res3", "readout")
    input_layer, *_, readout = net.dense_layers
    branch = net.blocks[1].branch[0]
    # muP with Adam (TP5 Table 3): input lr 1, hidden and readout lr 1/m, readout init var / m
    assert (input_layer.lr_multiplier, branch.lr_multiplier, readout.lr_multiplier) == (
        1.0, 0.25, 0.25)
    assert net == parametrization.parametrize(
        yang.network("resmlp", "sp", 256, optimizer="adam", base_width=256, blocks=2), "mup",
        base_width=64, optimizer="adam")
    with pytest.raises(ValueError, match="arch must be 'mlp' or 'resmlp', got 'cnn'"):
        yang.network("cnn", "mup", 64, optimizer="sgd", base_width=64)


def test_transformer_arm(quick):
    # muP flat, SP growing, and the logit: the attention entropy's fall grows with width under
    # 1/sqrt(d_head) and not under 1/d_head (every check of the report passed above)
    arms = {a["parametrization"]: a for a in quick["arms"] if a["arch"] == "transformer"}
    assert arms["mup"]["layers"] == ["block1", "block2", "block1/attn", "block2/attn", "readout"]
    fall = {p: np.asarray(a["entropy_fall"]) for p, a in arms.items()}
    # recomputed from the saved entropies: step 1 minus the last step, block mean
    for p, a in arms.items():
        e = np.asarray(a["attention_entropy"]).mean(axis=-1)
        np.testing.assert_allclose(fall[p], e[:, 0] - e[:, -1], rtol=1e-9)
    assert fall["mup_sqrt_logit"][-1] > 1.5 * fall["mup"][-1]
    # at init the two muP variants differ only in the logit; both start below log T
    e0 = {p: np.asarray(a["attention_entropy"])[:, 0].mean(axis=-1) for p, a in arms.items()}
    assert np.all(e0["mup"] <= np.log(yang.TOKENS)) and e0["mup"][-1] > e0["mup_sqrt_logit"][-1]
    # the model: muP's learning-rate factors by two routes, parametrize + token_heads (what the
    # arm trains with) and the parameters' paths (lr_multipliers_by_path), agree leaf by leaf
    import jax
    from flax import nnx

    model = yang.transformer("mup", 256, base_width=64)
    by_path = parametrization.lr_multipliers_by_path(
        nnx.state(model, nnx.Param), yang.TRANSFORMER_ROLES, "mup", base_width=64, width=256,
        optimizer="adam")
    mult = model.lr_multipliers()
    assert jax.tree.structure(by_path) == jax.tree.structure(mult)
    assert jax.tree.leaves(by_path) == [float(v) for v in jax.tree.leaves(mult)]
    assert float(mult["blocks"][0]["query"]["kernel"]) == 0.25
    assert float(mult["readout"]["kernel"]) == 0.25 and float(mult["embed"]["kernel"]) == 1.0
    assert model.blocks[0].logit_scale == pytest.approx(4.0 / 64)  # sqrt(16) / 64
    assert yang.transformer("mup_sqrt_logit", 256, base_width=64).blocks[0].logit_scale == 1 / 8
    with pytest.raises(ValueError, match="parametrization must be one of"):
        yang.transformer("ntk", 64, base_width=64)


def test_listed(capsys):
    check_listed(capsys, [NAME])
