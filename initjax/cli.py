"""The ``initjax`` command line: ``list``, ``propagate``, ``theory``, ``coord-check`` and ``reproduce``.

    initjax list
    initjax propagate --init he_normal --activation relu --depth 10 --width 1024 --seeds 8
    initjax propagate --init normal:stddev=0.01 --activation tanh --depth 10 --width 4096 --json
    initjax theory --activation tanh --sigma-w2 1.76 --sigma-b2 0.05 --depth 10 --json
    initjax propagate --arch residual --depth 100 --width 1024 --batch 16 --seeds 8 --init he_normal
                      --activation relu --branch-scale 1/sqrt(depth) --branch-layers 2 --norm layer --json
    initjax theory --arch residual --depth 100 --width 1024 --init he_normal --activation relu --json
    initjax propagate --arch transformer --depth 48 --width 256 --heads 8 --tokens 32 --batch 8
                      --seeds 4 --no-residual --json
    initjax coord-check --parametrization mup --widths 64,128,256,512,1024 --depth 3
                        --optimizer adam --lr 0.01 --steps 4 --seeds 4 --json
    initjax reproduce seed-demo --out results/seed-demo
    initjax reproduce --list

Bad arguments print one line ``initjax: error: ...`` naming the value and what is allowed, and
exit 2, before any work (argparse's own errors too, without the usage block). An ``--out`` folder
is held by one process at a time: a second ``initjax`` writing it is refused, naming the first's
pid (``initjax._io.claim_dir``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from initjax._precision import DEFAULT_PRECISION, PRECISIONS

__all__ = ["main"]

_TABLE_COLUMNS = (
    ("preact_var", "Var[h]"),
    ("act_mean", "mean[x]"),
    ("act_var", "Var[x]"),
    ("saturated", "sat"),
    ("zero_fraction", "zero"),
    ("dead_fraction", "dead"),
    ("cosine", "cos"),
    ("grad_var", "Var[dL/dh]"),
    ("weight_grad_var", "Var[dL/dW]"),
)


# JSON key (with _pred appended) -> theory.Prediction field, for --theory
_PREDICTED = (
    ("preact_second_moment", "preact_second_moment"),
    ("out_second_moment", "out_second_moment"),
    ("cosine", "cosine"),
    ("grad_var", "grad_preact_var"),
)


def _width(text: str) -> int | tuple[int, ...]:
    try:
        parts = [int(p) for p in text.split(",") if p.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"width must be an int or a comma list of ints, got {text!r}") from err
    if not parts:
        raise argparse.ArgumentTypeError(f"width must be an int or a comma list of ints, got {text!r}")
    return parts[0] if len(parts) == 1 else tuple(parts)


def _add_arch_flags(p: argparse.ArgumentParser, transformer: bool = False) -> None:
    """``--arch`` and the residual flags shared by ``propagate`` and ``theory`` (``transformer``:
    ``--arch transformer`` and its flags too, for ``propagate``)."""
    arches = ("mlp", "residual", "transformer") if transformer else ("mlp", "residual")
    p.add_argument("--arch", choices=arches, default="mlp",
                   help="mlp: a plain stack of layers; residual: --depth pre-activation residual blocks"
                        + ("; transformer: --depth attention blocks on --tokens tokens" if transformer else ""))
    p.add_argument("--branch-scale", default="1",
                   help="residual: the branch scale A, a number >= 0 or 1/sqrt(depth) (default 1)"
                        + ("; transformer: also inv-sqrt-depth" if transformer else ""))
    if transformer:
        p.add_argument("--heads", type=int, default=None, help="transformer: attention heads (divide --width)")
        p.add_argument("--tokens", type=int, default=None, help="transformer: tokens per sequence (>= 2)")
        p.add_argument("--mlp", action=argparse.BooleanOptionalAction, default=False,
                       help="transformer: add the MLP sub-block (gelu, 4 x width; default --no-mlp)")
        p.add_argument("--residual", action=argparse.BooleanOptionalAction, default=True,
                       help="transformer: residual blocks (default); --no-residual: pure attention x <- Attn(x)")
        p.add_argument("--causal", action="store_true", help="transformer: causal attention mask")
        p.add_argument("--qk-init", default=None,
                       help="transformer: initializer of W_Q and W_K (default: --init); zeros gives "
                            "uniform attention, which --theory predicts exactly")
    p.add_argument("--branch-layers", type=int, default=1, help="residual: weight layers per branch, 1 or 2")
    p.add_argument("--norm-position", choices=("pre", "post"), default="pre",
                   help="residual: norm inside the branch (pre) or after the add (post)")


def _branch_scale(text: str) -> float | str:
    from initjax.network import BRANCH_SCALES

    if text in BRANCH_SCALES:
        return text
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0 or value == float("inf"):  # NaN fails every comparison
        raise ValueError(f"--branch-scale must be a finite number >= 0 or one of {', '.join(BRANCH_SCALES)}; "
                         f"got {text!r}")
    return value


def _residual_network(args: argparse.Namespace):
    """The ``--arch residual`` network: ``Network.residual_mlp`` of the flags (input N(0, 1) of
    width ``--width``; ``--depth`` blocks)."""
    from initjax.network import Network

    width = args.width
    if not isinstance(width, int):
        raise ValueError(f"--arch residual takes one --width (the stream's), got {width!r}")
    return Network.residual_mlp(
        args.depth, width, init=args.init, activation=args.activation or "relu",
        branch_scale=_branch_scale(args.branch_scale), branch_layers=args.branch_layers,
        norm=args.norm, norm_position=args.norm_position, batch=args.batch,
    )


def _refuse_given(args: argparse.Namespace, flags: Sequence[str], why: str) -> None:
    """Refuse, not ignore, each of ``flags`` given a value other than its default: ``--FLAG WHY``.
    The defaults are the parser's own, read by parsing the bare command."""
    defaults = _parser().parse_args([args.command])
    for flag in flags:
        if getattr(args, flag) != getattr(defaults, flag):
            raise ValueError(f"--{flag.replace('_', '-')} {why}")


def _check_mlp_flags(args: argparse.Namespace) -> None:
    """Residual-only flags given without ``--arch residual`` are refused, not ignored."""
    _refuse_given(args, ("branch_scale", "branch_layers", "norm_position"),
                  "applies to --arch residual only")


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's one-line errors: ``initjax: error: ...`` and exit 2, without the
    usage block (``--help`` shows it)."""

    def error(self, message: str):  # type: ignore[override]
        message = " ".join(message.split())
        self.exit(2, f"initjax: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    from initjax.config import PLACEMENTS
    from initjax.engine import COTANGENTS
    from initjax.network import NORMS as NETWORK_NORMS

    parser = _Parser(
        prog="initjax",
        description="Signal propagation in deep networks at initialization: measure, predict, reproduce.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="list initializers, activations and reproductions")

    p = sub.add_parser("propagate", help="per-layer statistics of sampled networks")
    _add_arch_flags(p, transformer=True)
    p.add_argument("--init", default="lecun_normal", help="initializer spec, e.g. he_normal or normal:stddev=0.01")
    p.add_argument("--activation", default="tanh", help="activation spec, e.g. relu or leaky_relu:negative_slope=0.1")
    p.add_argument("--bias-init", default="zeros", help="bias initializer spec (default zeros)")
    p.add_argument("--depth", type=int, default=10, help="number of weight layers (default 10)")
    p.add_argument("--width", type=_width, default=1024, help="hidden width, or a comma list (one per layer)")
    p.add_argument("--in-width", type=int, default=None, help="input dimension (default: the first width)")
    p.add_argument("--batch", type=int, default=16, help="examples per batch (default 16)")
    p.add_argument("--seeds", type=int, default=4, help="independent networks (default 4)")
    p.add_argument("--key", type=int, default=0, help="base PRNG seed (default 0)")
    p.add_argument("--norm", choices=NETWORK_NORMS, default=None,
                   help="normalization: per layer (mlp; none, batch, layer) or per block (residual; also "
                        "rms); default none (transformer: layer, or none with --no-residual)")
    p.add_argument("--placement", choices=PLACEMENTS, default="before", help="norm before or after the activation")
    p.add_argument("--input-variance", type=float, default=1.0)
    p.add_argument("--input-correlation", type=float, default=0.0)
    p.add_argument("--cotangent", choices=COTANGENTS, default="normal", help="output gradient (default N(0, 1))")
    p.add_argument("--bins", type=int, default=40)
    p.add_argument("--method", choices=("dense", "fast"), default="dense",
                   help="dense: sample weight matrices; fast: exact O(batch x width) sampling for Gaussian weights")
    p.add_argument("--memory-budget", type=float, default=None,
                   help="bytes of temporaries per chunk and device (default: INITJAX_MEMORY_BUDGET, "
                        "else 3/4 of an accelerator's free memory or 1/4 of the host's available RAM)")
    p.add_argument("--precision", choices=PRECISIONS, default=DEFAULT_PRECISION,
                   help="matmul precision: highest (default; float32-exact on every backend), high, or "
                        "default (the backend's fastest: TF32-class on NVIDIA GPUs, 5e-5..1e-4 "
                        "relative in issue 13's H200 run)")
    p.add_argument("--devices", default=None,
                   help="split the seeds over this many devices, or 'all' (needs --prng-impl threefry2x32)")
    p.add_argument("--prng-impl", default="philox2x32",
                   help="PRNG implementation: philox2x32 (default), philox4x32, threefry2x32, threefry4x32")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--out", type=Path, default=None, help="write data and figures into this directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--theory", action="store_true",
                   help="add the mean-field prediction (table columns, JSON keys *_pred, dashed curves)")

    t = sub.add_parser("theory", help="mean-field predictions: q*, c*, chi_1, depth scales, per-layer q")
    _add_arch_flags(t)
    t.add_argument("--activation", default=None, help="activation spec (default tanh; relu for --arch residual)")
    t.add_argument("--sigma-w2", type=float, default=None,
                   help="weight variance times fan-in (required for --arch mlp)")
    t.add_argument("--init", default="he_normal", help="--arch residual: weight initializer spec")
    t.add_argument("--width", type=int, default=1024, help="--arch residual: stream width")
    t.add_argument("--batch", type=int, default=16, help="--arch residual: examples (batch norm's batch)")
    t.add_argument("--seeds", type=int, default=None, help="accepted for symmetry with propagate; unused")
    t.add_argument("--norm", choices=NETWORK_NORMS, default="none", help="--arch residual: block norm")
    t.add_argument("--sigma-b2", type=float, default=0.0, help="bias variance")
    t.add_argument("--depth", type=int, default=10, help="layers of the per-layer q iterates")
    t.add_argument("--q0", type=float, default=1.0, help="mean square of the input coordinates")
    t.add_argument("--json", action="store_true")

    r = sub.add_parser("reproduce", help="redraw a paper's figure (see --list)")
    r.add_argument("name", nargs="?", help="the reproduction's name")
    r.add_argument("--list", action="store_true", help="list the reproductions")
    r.add_argument("--quick", action="store_true", help="small sizes: seconds instead of minutes")
    r.add_argument("--seeds", type=int, default=None, help="number of seeds (default: the reproduction's)")
    r.add_argument("--out", type=Path, default=None, help="output directory (default results/NAME)")
    r.add_argument("--data-dir", type=Path, default=None,
                   help="a directory holding a dataset to train on instead of the bundled one "
                        "(ioffe2015-mnist: MNIST's four IDX files)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")

    from initjax import coordcheck

    coordcheck.add_parser(sub)
    return parser


def _cmd_list() -> int:
    from initjax import activations, initializers, reproductions

    print("initializers: " + ", ".join(initializers.names()))
    print("activations:  " + ", ".join(activations.names()))
    print("reproductions:")
    for name in reproductions.names():
        print(f"  {name:24s} {reproductions.get(name).summary}")
    return 0


def _format_table(result) -> str:
    rows = result.layer_table()
    header = f"{'layer':>5} " + " ".join(f"{title:>19}" for _, title in _TABLE_COLUMNS) + f" {'nonfinite':>9}"
    lines = [f"{result.config.name}: {result.seeds} seeds, mean +- sd over seeds", header]
    for row in rows:
        cells = []
        for name, _ in _TABLE_COLUMNS:
            mean, sd = row[name], row.get(name + "_sd", 0.0)
            # an overflowed statistic is inf (data) with no spread: no "+- nan" beside it
            spread = f"+-{sd:<7.2g}" if sd == sd else " " * 9
            cells.append(f"{mean:>10.3g} {spread}")
        lines.append(f"{row['layer']:>5} " + " ".join(cells) + f" {row['nonfinite']:>9d}")
    return "\n".join(lines)


def _devices(value: str | None) -> int | str | None:
    if value is None or value == "all":
        return value
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"--devices must be a positive integer or 'all', got {value!r}") from None


def _cmd_propagate(args: argparse.Namespace) -> int:
    import numpy as np

    from initjax import _io

    if args.out is not None:
        _io.check_out_dir(args.out, "--out")
    # one writer per --out folder: a second process is refused, naming the holder's pid
    claim = _io.claim_dir(args.out, "--out") if args.out is not None else contextlib.nullcontext()
    # an overflowed run's statistics are inf: their spread over seeds is NaN by design (numpy's
    # "invalid value" warnings there would only add lines to stderr; NonFiniteWarning says it once)
    with claim, np.errstate(invalid="ignore", over="ignore"):
        if args.arch == "transformer":
            return _propagate_transformer(args)
        _refuse_given(args, ("heads", "tokens", "mlp", "residual", "qk_init"), "applies to --arch transformer only")
        if args.causal:
            raise ValueError("--causal masks attention and applies to --arch transformer only: "
                             f"--arch {args.arch} has no attention blocks")
        if args.norm is None:
            args.norm = "none"
        if args.arch == "residual":
            return _propagate_residual(args)
        return _propagate_mlp(args)


def _propagate_mlp(args: argparse.Namespace) -> int:
    from initjax import _io, plotting
    from initjax.config import NetworkConfig
    from initjax.engine import FallbackWarning, NonFiniteWarning, propagate

    _check_mlp_flags(args)
    config = NetworkConfig(
        depth=args.depth,
        width=args.width,
        batch=args.batch,
        init=args.init,
        activation=args.activation,
        bias_init=args.bias_init,
        input_variance=args.input_variance,
        input_correlation=args.input_correlation,
        in_width=args.in_width,
        norm=args.norm,
        norm_placement=args.placement,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NonFiniteWarning)
        warnings.simplefilter("always", FallbackWarning)
        result = propagate(
            config, args.seeds, args.key, cotangent=args.cotangent, bins=args.bins,
            progress=False if args.quiet else None, method=args.method, memory_budget=args.memory_budget,
            devices=_devices(args.devices), prng_impl=args.prng_impl, precision=args.precision,
        )
    for w in caught:
        print(f"initjax: warning: {w.message}", file=sys.stderr)
    prediction = _predict_unless_overflow(config) if args.theory else None
    payload = result.to_json_dict()
    if prediction is not None:
        for row, i in zip(payload["layers"], range(config.depth)):
            for name, field in _PREDICTED:
                row[name + "_pred"] = float(getattr(prediction, field)[i])
    if args.json:
        print(json.dumps(_io.json_safe(payload)))
    else:
        print(_format_table(result))
        if prediction is not None:
            print("mean-field prediction (theory.predict):")
            print(f"{'layer':>5} " + " ".join(f"{n + '_pred':>22}" for n, _ in _PREDICTED))
            for row in payload["layers"]:
                print(f"{row['layer']:>5} " + " ".join(f"{row[n + '_pred']:>22.4g}" for n, _ in _PREDICTED))
    if args.out is not None:
        result.save(args.out)
        _io.write_json(args.out / "layers.json", result.to_json_dict())
        fig = plotting.new_figure(max(8.0, 1.6 * config.depth), 4.4)
        top, bottom = fig.subfigures(2, 1)
        plotting.hist_strip(result, "act", fig=top)
        plotting.hist_strip(result, "grad", fig=bottom, color="C3")
        _io.save_figure(fig, args.out / "histograms")
        fig = plotting.new_figure(10.0, 4.0)
        a, b = fig.subplots(1, 2)
        theory_q = None if prediction is None else [prediction.preact_second_moment]
        theory_g = None if prediction is None else [prediction.grad_preact_var]
        plotting.variance_curves(result, "preact_second_moment", ax=a, theory=theory_q)
        plotting.variance_curves(result, "grad_preact_var", ax=b, theory=theory_g)
        _io.save_figure(fig, args.out / "variance")
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def _predict_unless_overflow(config):
    """``theory.predict(config)``, or None with a warning when the recursion overflows (a net whose
    variance grows past float range: the measured table is still printed, with inf)."""
    from initjax import theory

    try:
        return theory.predict(config)
    except (ValueError, FloatingPointError, OverflowError) as err:
        if "finite" not in str(err) and not isinstance(err, FloatingPointError | OverflowError):
            raise
        print(f"initjax: warning: the mean-field prediction overflowed ({err}); showing the measurement "
              "only", file=sys.stderr)
        return None


def _propagate_residual(args: argparse.Namespace) -> int:
    """``initjax propagate --arch residual``: per-block statistics (the block engine)."""
    from initjax import _io, plotting

    _refuse_given(args, ("in_width", "bias_init", "input_variance", "input_correlation", "bins",
                         "method", "devices", "placement"), "does not apply to --arch residual")
    network = _residual_network(args)
    result = _measure_blocks(args, network)
    prediction = None
    if args.theory:
        from initjax import theory

        prediction = theory.predict(network)
    payload = result.to_json_dict()
    if prediction is not None:
        for row, pred in zip(payload["layers"], prediction.layer_table(), strict=True):
            for name in ("q", "branch_var", "cosine", "grad_var"):
                row[name + "_pred"] = pred[name]
    if args.json:
        print(json.dumps(_io.json_safe(payload)))
    else:
        print(_format_block_table(result, payload))
    if args.out is not None:
        result.save(args.out)
        _io.write_json(args.out / "layers.json", payload)
        fig = plotting.new_figure(10.0, 4.0)
        a, b = fig.subplots(1, 2)
        plotting.variance_curves(result, "act_second_moment", ax=a,
                                 theory=None if prediction is None else [prediction.q])
        plotting.variance_curves(result, "grad_second_moment", ax=b,
                                 theory=None if prediction is None else [prediction.grad])
        _io.save_figure(fig, args.out / "variance")
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def _transformer_network(args: argparse.Namespace):
    """The ``--arch transformer`` network: ``Network.transformer`` of the flags (tokens i.i.d.
    N(0, 1) unless --input-variance / --input-correlation say otherwise)."""
    from initjax.network import Network

    if args.heads is None or args.tokens is None:
        raise ValueError("--arch transformer needs --heads H and --tokens T (e.g. --heads 4 --tokens 16), "
                         f"got --heads {args.heads} --tokens {args.tokens}")
    if not isinstance(args.width, int):
        raise ValueError(f"--arch transformer takes one --width (the stream's), got {args.width!r}")
    if not args.residual:
        _refuse_given(args, ("branch_scale",), "does not apply with --no-residual (there is no branch to scale)")
    scale = args.branch_scale
    scale = "1/sqrt(depth)" if scale == "inv-sqrt-depth" else _branch_scale(scale)
    norm = args.norm if args.norm is not None else ("layer" if args.residual else "none")
    return Network.transformer(
        args.depth, args.width, args.heads, args.tokens, args.batch, mlp=args.mlp,
        residual=args.residual, norm=norm, norm_position=args.norm_position, branch_scale=scale,
        causal=args.causal, init=args.init, qk_init=args.qk_init, input_variance=args.input_variance,
        input_correlation=args.input_correlation)


# the attention theory's per-block predictions beside the measured keys (--theory)
_TRANSFORMER_THEORY = {"act_second_moment": "q", "cosine": "cosine", "branch_var": "branch_var",
                       "attn_entropy": "attn_entropy", "grad_second_moment": "grad",
                       "grad_norm_v": "grad_norm_v", "grad_norm_o": "grad_norm_o"}
_TRANSFORMER_COLUMNS = (("cosine", "cos"), ("rel_residual", "rel res"), ("attn_entropy", "entropy"),
                        ("act_var", "Var[x]"), ("grad_var", "Var[dL/dx]"), ("grad_norm_q", "|dW_Q|"),
                        ("grad_norm_k", "|dW_K|"), ("grad_norm_v", "|dW_V|"), ("grad_norm_o", "|dW_O|"))


def _propagate_transformer(args: argparse.Namespace) -> int:
    """``initjax propagate --arch transformer``: per-block statistics (the attention engine)::

        initjax propagate --arch transformer --depth L --width D --heads H --tokens T --batch B
            --seeds S [--mlp|--no-mlp] [--residual|--no-residual] [--norm layer|rms|none]
            [--norm-position pre|post] [--branch-scale A|inv-sqrt-depth] [--causal] [--qk-init INIT]
            [--theory] [--json]

    Defaults: ``--no-mlp --residual --norm layer --norm-position pre --branch-scale 1``, Q/K/V/O
    weights ``--init lecun_normal`` (variance 1/D); ``--no-residual`` defaults to ``--norm none``
    (pure attention ``x <- Attn(x)``, Dong et al. 2021).
    """
    from initjax import _io

    _refuse_given(args, ("in_width", "bias_init", "bins", "method", "devices", "placement",
                         "branch_layers", "activation"),
                  "does not apply to --arch transformer")
    network = _transformer_network(args)
    prediction = None
    if args.theory:  # uniform attention only (--qk-init zeros): refused by name otherwise, before any work
        from initjax import theory

        prediction = theory.predict(network)
    result = _measure_blocks(args, network)
    payload = result.to_json_dict()
    if prediction is not None:
        for i, row in enumerate(payload["layers"]):
            for name, field in _TRANSFORMER_THEORY.items():
                row[name + "_pred"] = float(getattr(prediction, field)[i])
    if args.json:
        print(json.dumps(_io.json_safe(payload)))
    else:
        header = f"{'block':>5} " + " ".join(f"{title:>11}" for _, title in _TRANSFORMER_COLUMNS)
        lines = [f"{network.name} ({network.tokens} tokens): {result.seeds} seeds, mean over seeds", header]
        for row in payload["layers"]:
            lines.append(f"{row['block']:>5} " + " ".join(f"{row[n]:>11.4g}" for n, _ in _TRANSFORMER_COLUMNS))
        print("\n".join(lines))
    if args.out is not None:
        result.save(args.out)
        _io.write_json(args.out / "layers.json", payload)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def _measure_blocks(args: argparse.Namespace, network: Any) -> Any:
    """``propagate`` of a residual or token network with the command's options; non-finite
    warnings are printed as one line each."""
    from initjax.engine import NonFiniteWarning, propagate

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NonFiniteWarning)
        result = propagate(network, args.seeds, args.key, cotangent=args.cotangent,
                           progress=False if args.quiet else None, memory_budget=args.memory_budget,
                           prng_impl=args.prng_impl, precision=args.precision)
    for w in caught:
        print(f"initjax: warning: {w.message}", file=sys.stderr)
    return result


_BLOCK_COLUMNS = (("act_var", "Var[x]"), ("act_sq_mean", "chan mean^2"), ("branch_var", "Var[A f]"),
                  ("branch_share", "share"), ("cosine", "cos"), ("grad_var", "Var[dL/dx]"))


def _format_block_table(result, payload) -> str:
    header = f"{'block':>5} " + " ".join(f"{title:>19}" for _, title in _BLOCK_COLUMNS) + f" {'nonfinite':>9}"
    lines = [f"{result.network.name}: {result.seeds} seeds, mean +- sd over seeds", header]
    for row in payload["layers"]:
        cells = [f"{row[n]:>10.3g} " + (f"+-{row[n + '_sd']:<7.2g}" if row[n + "_sd"] == row[n + "_sd"]
                                         else " " * 9) for n, _ in _BLOCK_COLUMNS]
        lines.append(f"{row['block']:>5} " + " ".join(cells) + f" {row['nonfinite']:>9d}")
        if "q_pred" in row:
            lines.append(f"{'pred':>5} {row['q_pred']:>10.3g} (q)  branch {row['branch_var_pred']:.3g}  "
                         f"cos {row['cosine_pred']:.3g}  grad {row['grad_var_pred']:.3g}")
    return "\n".join(lines)


def _theory_residual(args: argparse.Namespace) -> int:
    """``initjax theory --arch residual``: the per-block mean-field prediction."""
    from initjax import _io, theory

    if args.sigma_w2 is not None:
        raise ValueError("--sigma-w2 does not apply to --arch residual: the weights' variance comes "
                         "from --init and --width")
    network = _residual_network(args)
    prediction = theory.predict(network)
    out = {"network": network.to_dict(), "layers": prediction.layer_table()}
    if args.json:
        print(json.dumps(_io.json_safe(out)))
        return 0
    print(f"{network.name}: mean-field prediction per block")
    print(f"{'block':>5} {'q':>12} {'branch_var':>12} {'share':>8} {'cosine':>8} {'grad_var':>12}")
    for row in out["layers"]:
        print(f"{row['block']:>5} {row['q']:>12.4g} {row['branch_var']:>12.4g} {row['branch_share']:>8.3g} "
              f"{row['cosine']:>8.3g} {row['grad_var']:>12.4g}")
    return 0


def _cmd_theory(args: argparse.Namespace) -> int:
    from initjax import _io, theory
    from initjax._checks import check_float, check_int

    if args.arch == "residual":
        # before the network is walked block by block: a typo cannot hang
        check_int("depth", args.depth, minimum=1)
        if args.depth > theory.MAX_DEPTH:
            raise ValueError(f"--depth must be <= {theory.MAX_DEPTH} (one value per block is computed "
                             f"and kept), got {args.depth}")
        return _theory_residual(args)
    _check_mlp_flags(args)
    _refuse_given(args, ("init", "width", "batch", "norm"),
                  "applies to --arch residual only (--arch mlp takes --sigma-w2)")
    if args.sigma_w2 is None:
        raise ValueError("--arch mlp needs --sigma-w2 (the weight variance times the fan-in)")
    args.activation = args.activation or "tanh"

    check_float("--sigma-w2", args.sigma_w2, minimum=0.0)
    check_float("--sigma-b2", args.sigma_b2, minimum=0.0)
    check_int("--depth", args.depth, minimum=1)
    check_float("--q0", args.q0, minimum=0.0, strict_minimum=True)
    ds = theory.depth_scales(args.sigma_w2, args.sigma_b2, args.activation)
    q = theory.variance_iterates(args.q0, args.sigma_w2, args.sigma_b2, args.activation, args.depth)
    out = {
        "activation": args.activation,
        "sigma_w2": args.sigma_w2,
        "sigma_b2": args.sigma_b2,
        "q_star": float(ds.q_star),
        "c_star": float(ds.c_star),
        "chi_1": float(ds.chi_1),
        "xi_q": float(ds.xi_q),
        "xi_c": float(ds.xi_c),
        "q": [float(v) for v in q],
    }
    if args.json:
        print(json.dumps(_io.json_safe(out)))
        return 0
    phase = "ordered" if out["chi_1"] < 1 else "chaotic" if out["chi_1"] > 1 else "critical"
    print(f"{args.activation}, sigma_w^2 = {args.sigma_w2}, sigma_b^2 = {args.sigma_b2}: {phase} phase")
    for k in ("q_star", "c_star", "chi_1", "xi_q", "xi_c"):
        print(f"  {k:7s} {out[k]:.6g}")
    print("  q^l    " + " ".join(f"{v:.4g}" for v in out["q"]))
    return 0


def _cmd_reproduce(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from initjax import _io, reproductions

    if args.list or args.name is None:
        if args.name is None and not args.list:
            parser.error("reproduce needs a NAME or --list; known: " + ", ".join(reproductions.names()))
        wide = max(map(len, reproductions.names()))
        for name in reproductions.names():
            print(f"{name:{wide}s}  {reproductions.get(name).summary}")
        return 0
    out = args.out if args.out is not None else Path("results") / args.name
    reproductions.get(args.name)  # an unknown name is refused before the output is touched
    _io.check_out_dir(out, "--out")
    with _io.claim_dir(out, "--out"):  # one writer per folder
        report = reproductions.run(args.name, out, quick=args.quick, seeds=args.seeds,
                                   progress=False if args.quiet else None, data_dir=args.data_dir)
    failed = [c["check"] for c in report.get("checks", []) if not c["pass"]]
    print(f"{args.name}: wrote {out} in {report.get('seconds', float('nan')):.0f} s; "
          f"{len(report.get('checks', [])) - len(failed)}/{len(report.get('checks', []))} checks pass")
    for check in failed:
        print(f"  FAILED: {check}")
    print(f"  see {out / 'report.md'}")
    return 0


def enable_compilation_cache() -> str | None:
    """Turn on JAX's persistent compilation cache for this process, so a second run of the same
    command loads its compiled programs from disk instead of compiling them again (on the
    development machine the five-scheme demo's first call went from 8.5 s to 2.3 s).

    The directory is ``$INITJAX_CACHE_DIR``, else ``~/.cache/initjax/xla``; an empty
    ``INITJAX_CACHE_DIR`` turns the cache off, and a ``JAX_COMPILATION_CACHE_DIR`` set by the user
    wins (JAX reads it itself). Returns the directory in use, or None.
    """
    import jax

    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return os.environ["JAX_COMPILATION_CACHE_DIR"]
    path = os.environ.get("INITJAX_CACHE_DIR", str(Path.home() / ".cache" / "initjax" / "xla"))
    if not path:
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``initjax`` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    enable_compilation_cache()
    try:
        if args.command == "list":
            return _cmd_list()
        if args.command == "propagate":
            return _cmd_propagate(args)
        if args.command == "theory":
            return _cmd_theory(args)
        if args.command == "coord-check":
            from initjax import coordcheck

            return coordcheck.main(args)
        return _cmd_reproduce(args, parser)
    except (ValueError, TypeError, MemoryError, OSError) as err:  # OSError: files, permissions
        print(f"initjax: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("initjax: error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
