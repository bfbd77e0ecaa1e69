"""Name -> factory registries, and the ``"name:key=value,..."`` spec strings used by configs and the CLI.

A registry maps a scheme's name (and its aliases) to a factory. ``get("normal:stddev=0.01")`` and
``get("normal", stddev=0.01)`` are the same call. An unknown name raises ``ValueError`` listing the
known names (init2winit's ``initializers.get`` does the same).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def _parse_value(text: str) -> Any:
    """Parse one spec value: JSON numbers, true/false/null, else the bare string."""
    lowered = text.strip()
    if lowered in ("True", "False", "None"):
        lowered = lowered.lower().replace("none", "null")
    try:
        return json.loads(lowered)
    except json.JSONDecodeError:
        return text.strip()


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split ``"name:k=v,k2=v2"`` into ``("name", {"k": v, "k2": v2})``.

    Values are read as JSON scalars where possible (``0.01``, ``2``, ``true``), else kept as strings
    (``nonlinearity=relu``).

    Raises:
      ValueError: if a ``key=value`` item lacks its ``=`` or the name is empty.
    """
    if not isinstance(spec, str):
        raise TypeError(f"a spec must be a string like 'normal:stddev=0.01', got {spec!r}")
    name, _, rest = spec.partition(":")
    name = name.strip()
    if not name:
        raise ValueError(f"spec {spec!r} has no name; expected 'name' or 'name:key=value,...'")
    kwargs: dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(
                f"spec {spec!r}: item {item!r} is not 'key=value'; expected 'name:key=value,...'"
            )
        kwargs[key.strip()] = _parse_value(value)
    return name, kwargs


def format_spec(name: str, kwargs: Mapping[str, Any]) -> str:
    """Inverse of :func:`parse_spec`: ``("normal", {"stddev": 0.01})`` -> ``"normal:stddev=0.01"``."""
    if not kwargs:
        return name
    items = ",".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in kwargs.items())
    return f"{name}:{items}"


def freeze_kwargs(kwargs: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """Sorted ``(key, value)`` pairs: a hashable, order-independent form of keyword arguments."""
    frozen = []
    for k, v in sorted(kwargs.items()):
        if isinstance(v, list):
            v = tuple(v)
        try:
            hash(v)
        except TypeError as err:
            raise TypeError(f"argument {k}={v!r} must be hashable (a number, string or tuple)") from err
        frozen.append((k, v))
    return tuple(frozen)


class SpecValue:
    """Mixin for a registry value with ``name`` and sorted ``params`` fields (an Activation, an
    Initializer): its parameters as a dict and the spec string the registry parses back."""

    name: str
    params: tuple[tuple[str, Any], ...]

    @property
    def kwargs(self) -> dict[str, Any]:
        """The parameters as a dict."""
        return dict(self.params)

    @property
    def spec(self) -> str:
        """The spec string that the registry's ``get`` turns back into this value."""
        return format_spec(self.name, self.kwargs)


class Registry(Generic[T]):
    """A registry of named factories, e.g. of initializers or activations.

    Args:
      kind: what the registry holds, used in error messages ("initializer", "activation").
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}
        self._canonical: dict[str, str] = {}

    def register(self, name: str, factory: Callable[..., T], *, aliases: tuple[str, ...] = ()) -> None:
        """Register ``factory`` under ``name`` (and ``aliases``). Re-registering a name raises."""
        for n in (name, *aliases):
            if n in self._factories:
                raise ValueError(f"{self.kind} {n!r} is already registered")
            self._factories[n] = factory
            self._canonical[n] = name

    def names(self, *, aliases: bool = True) -> tuple[str, ...]:
        """The registered names, sorted; with ``aliases=False`` only the canonical ones."""
        if aliases:
            return tuple(sorted(self._factories))
        return tuple(sorted(set(self._canonical.values())))

    def canonical(self, name: str) -> str:
        """The canonical name of ``name`` (itself, or what it is an alias of)."""
        self._check_known(name)
        return self._canonical[name]

    def _check_known(self, name: str) -> None:
        if name not in self._factories:
            raise ValueError(
                f"unknown {self.kind} {name!r}; known {self.kind}s: {', '.join(self.names())}"
            )

    def get(self, spec: str, **kwargs: Any) -> T:
        """Build the registered ``spec`` (``"name"`` or ``"name:k=v,..."``) with ``kwargs``.

        Keyword arguments given here override those written in the spec string.

        Raises:
          ValueError: if the name is unknown (the message lists the known names), or a keyword
            argument is not accepted by the factory.
        """
        name, spec_kwargs = parse_spec(spec)
        self._check_known(name)
        spec_kwargs.update(kwargs)
        factory = self._factories[name]
        try:
            return factory(**spec_kwargs)
        except TypeError as err:
            if "unexpected keyword argument" in str(err) or "positional argument" in str(err):
                raise ValueError(f"{self.kind} {name!r}: bad arguments {spec_kwargs}: {err}") from err
            raise

    def __contains__(self, name: str) -> bool:
        return name in self._factories
