"""The public face: ``import initjax`` is light, and every exported name resolves.

Import lightness is measured in a fresh interpreter (this process has long imported everything).
"""

import json
import subprocess
import sys

import pytest

HEAVY = ("matplotlib", "flax", "optax", "initjax.cli", "initjax.plotting", "initjax.training")


def _fresh(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON object as its last line."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_initjax_loads_no_plotting_cli_flax_or_optax():
    loaded = _fresh(
        "import initjax, json, sys; "
        f"print(json.dumps({{m: m in sys.modules for m in {list(HEAVY)!r}}}))"
    )
    assert loaded == {m: False for m in HEAVY}


def test_the_engine_and_theory_need_no_matplotlib_flax_or_optax():
    loaded = _fresh(
        "import initjax, json, sys; initjax.propagate; initjax.theory; initjax.sweep; "
        "initjax.NetworkConfig; initjax.initializers; initjax.data; "
        "print(json.dumps({m: m in sys.modules for m in ['matplotlib', 'flax', 'optax']}))"
    )
    assert loaded == {"matplotlib": False, "flax": False, "optax": False}


def test_names_load_on_first_use():
    # The check above is not vacuous: touching plotting does load matplotlib.
    loaded = _fresh(
        "import initjax, json, sys; before = 'matplotlib' in sys.modules; initjax.plotting; "
        "print(json.dumps([before, 'matplotlib' in sys.modules]))"
    )
    assert loaded == [False, True]


def test_import_initjax_training_works_and_train_is_its_alias():
    same = _fresh(
        "import initjax.training, initjax, json; "
        "print(json.dumps([initjax.train is initjax.training, "
        "initjax.training.__name__]))"
    )
    assert same == [True, "initjax.training"]


def test_every_exported_name_resolves_and_dir_lists_it():
    import initjax

    assert len(set(initjax.__all__)) == len(initjax.__all__)
    for name in initjax.__all__:
        assert getattr(initjax, name) is not None, name
    assert set(initjax.__all__) <= set(dir(initjax))
    # the names are the public objects of their modules, not copies
    from initjax import config, gains, probing, sweeps, training

    assert initjax.NetworkConfig is config.NetworkConfig
    assert initjax.calculate_gain is gains.calculate_gain
    assert initjax.probe is probing.probe
    assert initjax.sweep is sweeps.sweep
    assert initjax.train is training
    assert callable(initjax.propagate) and callable(initjax.enable_compilation_cache)


def test_an_unknown_name_is_an_attribute_error_naming_it():
    import initjax

    with pytest.raises(AttributeError, match="no attribute 'propagte'"):
        initjax.propagte  # noqa: B018
    assert not hasattr(initjax, "_not_a_name")
