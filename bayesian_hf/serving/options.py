"""How a service setting is declared once and everything else derived from that declaration.

A setting is a dataclass field made with :func:`option`: its default, its type annotation, the short help of its
``bayesian-hf serve`` flag and its check. From those fields come the environment variable
(``BAYESIAN_HF_<NAME>``, :func:`env_name`), the flag (``--name-with-dashes``; a ``_s`` suffix means seconds and is
dropped, a switch that defaults to on is ``--no-name``; :func:`add_arguments`), the conversion of flag and
environment text (:func:`convert`) and the validation at start-up (:func:`normalize_fields`,
:func:`check_fields`), in the order the fields are declared.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ENV_PREFIX = "BAYESIAN_HF_"


def env_name(name: str) -> str:
    """The environment variable of setting ``name``."""
    return f"{ENV_PREFIX}{name.upper()}"


def _fmt(bound: float | str) -> str:
    if isinstance(bound, str):
        return bound
    return str(int(bound)) if float(bound).is_integer() else str(bound)


@dataclass(frozen=True)
class Range:
    """``low <= value <= high`` (``low < value`` when ``low_open``; no upper bound when ``high`` is ``None``). A
    ``high`` given as a setting's name is that setting's value, or ``unset_high`` while that setting is unset."""

    low: float
    high: float | str | None = None
    low_open: bool = False
    unset_high: float | None = None

    def ok(self, value: Any, settings: Any) -> bool:
        high = getattr(settings, self.high) if isinstance(self.high, str) else self.high
        if high is None:
            high = self.unset_high
        above = value > self.low if self.low_open else value >= self.low
        return above and (high is None or value <= high)

    @property
    def message(self) -> str:
        if self.high is None:
            return f"must be {'>' if self.low_open else '>='} {_fmt(self.low)}"
        return f"must be in {'(' if self.low_open else '['}{_fmt(self.low)}, {_fmt(self.high)}]"


@dataclass(frozen=True)
class OneOf:
    """``value`` is one of ``values``."""

    values: tuple[str, ...]

    def ok(self, value: Any, settings: Any) -> bool:
        return value in self.values

    @property
    def message(self) -> str:
        return f"must be one of {', '.join(self.values)}"


@dataclass(frozen=True)
class Option:
    """What a setting declares besides its name, type and default (see :func:`option`)."""

    help: str = ""
    shown: str | None = None
    check: Range | OneOf | None = None
    parse: Callable[[Any], Any] | None = None
    normalize: Callable[[Any], Any] | None = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None


def option(default: Any, help: str = "", *, shown: str | None = None, check: Range | OneOf | None = None,
           parse: Callable[[Any], Any] | None = None, normalize: Callable[[Any], Any] | None = None,
           choices: tuple[str, ...] | None = None, metavar: str | None = None) -> Any:
    """A setting: a dataclass field with ``default`` and its :class:`Option` in the field's metadata.

    ``help`` is the flag's help; ``shown`` what the help says after the environment variable's name (a format
    string of ``{default}``; unset: ``, default <default>``, nothing for an unset default, ``=true`` / ``=false``
    for a switch). ``check`` is validated at start-up (``None`` passes when the default is ``None``; a ``float``
    must also be finite). ``parse`` turns a flag's or variable's text into the value, and is applied to values
    given directly too; ``normalize`` only to those (before any check). ``choices`` restricts the flag (default:
    the values of a :class:`OneOf` check); ``metavar`` names its argument (``SECONDS`` for a ``_s`` setting)."""
    return dataclasses.field(default=default, metadata={"option": Option(
        help=help, shown=shown, check=check, parse=parse, normalize=normalize, choices=choices, metavar=metavar)})


def _option(f: dataclasses.Field) -> Option:
    return f.metadata.get("option") or Option()


# ------------------------------------------------------------------------------------------------- text values
def split_list(value: Any) -> tuple[str, ...]:
    """``"a, b"`` or ``["a", "b"]`` -> ``("a", "b")`` (empty items dropped)."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(str(v).strip() for v in value if str(v).strip())


def to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected a boolean (true/false), got {value!r}")


def convert(f: dataclasses.Field, value: Any) -> Any:
    """The value of setting ``f`` from a flag or an environment variable's text."""
    kind = str(f.type)
    parse = _option(f).parse
    if parse is not None:
        return parse(value)
    if kind.startswith("bool"):
        return to_bool(value)
    try:
        if kind.startswith("int"):
            if isinstance(value, bool):
                raise ValueError
            return int(value)
        if kind.startswith("float"):
            return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"setting {f.name} must be a {kind.split(' ')[0]}, got {value!r}") from None
    return str(value)


# ---------------------------------------------------------------------------------------------------- checks
def normalize_fields(settings: Any) -> None:
    """Apply each setting's ``normalize`` (else ``parse``) to its value, in place (``settings`` may be frozen)."""
    for f in dataclasses.fields(settings):
        opt = _option(f)
        fn = opt.normalize or opt.parse
        if fn is not None:
            object.__setattr__(settings, f.name, fn(getattr(settings, f.name)))


def check_fields(settings: Any) -> None:
    """``ValueError`` naming the first setting, in declaration order, whose value fails its check."""
    for f in dataclasses.fields(settings):
        check = _option(f).check
        value = getattr(settings, f.name)
        if check is None or (value is None and f.default is None):
            continue
        finite = not str(f.type).startswith("float") or math.isfinite(value)
        if not (finite and check.ok(value, settings)):
            raise ValueError(f"setting {f.name} {check.message}, got {value!r}")


# ------------------------------------------------------------------------------------------------ command line
def _shown(f: dataclasses.Field, opt: Option) -> str:
    if opt.shown is not None:
        return opt.shown.format(default=f.default)
    if str(f.type).startswith("bool"):
        return "=false" if f.default else "=true"
    if f.default in (None, "", ()):
        return ""
    return f", default {f.default:g}" if isinstance(f.default, float) else f", default {f.default}"


def add_arguments(parser: Any, cls: type) -> None:
    """One flag per setting of the dataclass ``cls``. Every default is ``None`` so that an unset flag falls back to
    the environment variable and then to the dataclass default."""
    for f in dataclasses.fields(cls):
        opt = _option(f)
        kind = str(f.type)
        help = f"[{env_name(f.name)}{_shown(f, opt)}]"
        help = f"{opt.help} {help}" if opt.help else help
        name = f.name[:-2] if f.name.endswith("_s") else f.name
        if kind.startswith("bool"):
            flag = f"--no-{name}" if f.default else f"--{name}"
            parser.add_argument(flag.replace("_", "-"), dest=f.name, action="store_const", const=not f.default,
                                default=None, help=help)
            continue
        choices = opt.choices or (opt.check.values if isinstance(opt.check, OneOf) else None)
        metavar = opt.metavar or ("SECONDS" if f.name.endswith("_s") else None)
        parser.add_argument("--" + name.replace("_", "-"), dest=f.name, choices=choices, metavar=metavar, help=help,
                            type=int if kind.startswith("int") else float if kind.startswith("float") else None)
