"""What fast_litellm knows about LiteLLM versions, in one place.

- `TESTED`: every LiteLLM minor the version matrix in CI tests, with the patch release it
  installs and what is tested there (the README's range table says the same).
- `litellm_version()` / `version_status()`: the installed LiteLLM and whether it is inside
  the tested range (`status()` reports it).
- The shape checks every component runs before it patches: a name it uses that is missing,
  or a function whose parameters are none of the shapes its patch was written against,
  leaves that component off with a WARNING naming what changed. Where LiteLLM changed a
  signature between releases, a component lists each accepted shape here-by-name (a variant)
  and adapts to the one it finds; there is never a copy of a patch per version.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

#: (minor, newest patch release CI installs, what the matrix tests there). "limiter not
#: tested here" where the proxy code cannot be installed from the package index.
TESTED: Tuple[Tuple[str, str, str], ...] = (
    ("1.104", "1.104.9", "components"),
    ("1.105", "1.105.7", "components"),
    ("1.106", "1.106.12", "components"),
    ("1.108", "1.108.14", "components; end to end on 1.108.7"),
    ("1.109", "1.109.3", "components"),
    ("1.110", "1.110.2", "components"),
)
#: Releases withdrawn from the package index: never declared as supported.
WITHDRAWN_MINORS = ("1.107",)


def _minor(version: str) -> Optional[Tuple[int, int]]:
    parts = version.split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None


def litellm_version() -> Optional[str]:
    """The installed LiteLLM's version (its distribution metadata), or None."""
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover - Python < 3.8
        return None
    try:
        return version("litellm")
    except PackageNotFoundError:
        return None


def tested_range() -> str:
    """'1.104–1.110 (not 1.107)' for messages."""
    first, last = TESTED[0][0], TESTED[-1][0]
    return f"{first} to {last}" + (f" (not {', '.join(WITHDRAWN_MINORS)})" if WITHDRAWN_MINORS else "")


def in_tested_range(version: Optional[str]) -> bool:
    """Whether `version`'s minor is one the matrix tests."""
    if version is None:
        return False
    minor = _minor(version)
    return minor is not None and any(_minor(m) == minor for m, _, _ in TESTED)


def version_status() -> Dict[str, Any]:
    """{"litellm": "1.108.7", "tested": True, "tested_range": "1.104 to 1.110 (not 1.107)"}."""
    found = litellm_version()
    return {"litellm": found, "tested": in_tested_range(found), "tested_range": tested_range()}


# ---- shape checks ---------------------------------------------------------------------------


def parameters(function: Any) -> Tuple[str, ...]:
    """The parameter names of a function (or a staticmethod/classmethod's function)."""
    return tuple(inspect.signature(getattr(function, "__func__", function)).parameters)


def name_of(owner: Any, attribute: str) -> str:
    return f"{getattr(owner, '__name__', owner)}.{attribute}"


def missing(names: Iterable[Tuple[Any, str]]) -> List[str]:
    """'<owner>.<name> missing' for each (owner, name) LiteLLM does not have."""
    return [f"{name_of(o, a)} missing" for o, a in names if not hasattr(o, a)]


@dataclass(frozen=True)
class Shape:
    """One function a patch replaces or calls, and the parameter lists it accepts: a variant
    name for each (e.g. {"router": (...), "ctx": (...)}) so a patch can adapt to the one
    LiteLLM has."""

    owner: Any
    attribute: str
    variants: Mapping[str, Tuple[str, ...]]
    is_async: Optional[bool] = None

    def found(self) -> Optional[Tuple[str, ...]]:
        original = inspect.getattr_static(self.owner, self.attribute, None)
        return None if original is None else parameters(original)

    def variant(self) -> Optional[str]:
        """The name of the variant LiteLLM has, or None."""
        found = self.found()
        for name, params in self.variants.items():
            if found == params:
                return name
        return None

    def problem(self) -> Optional[str]:
        original = inspect.getattr_static(self.owner, self.attribute, None)
        if original is None:
            return f"{name_of(self.owner, self.attribute)} missing"
        found = parameters(original)
        if found not in self.variants.values():
            accepted = " or ".join(str(v) for v in self.variants.values())
            return f"{name_of(self.owner, self.attribute)}{found} is not {accepted}"
        if self.is_async is not None:
            function = getattr(original, "__func__", original)
            if inspect.iscoroutinefunction(function) != self.is_async:
                return f"{name_of(self.owner, self.attribute)} changed between sync and async"
        return None


def shape(owner: Any, attribute: str, *accepted: Tuple[str, ...], is_async: Optional[bool] = None) -> Shape:
    """A Shape whose variants are numbered "0", "1", ... in the order given."""
    return Shape(owner, attribute, {str(i): params for i, params in enumerate(accepted)}, is_async)


def problems(shapes: Sequence[Shape], names: Iterable[Tuple[Any, str]] = ()) -> List[str]:
    """Every mismatch among `shapes` and the `names` the patches read."""
    found = missing(names)
    found += [p for p in (s.problem() for s in shapes) if p is not None]
    return found
