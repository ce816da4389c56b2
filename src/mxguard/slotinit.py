"""A cheaper `__init__` for frozen, slotted dataclasses built on every decision.

A frozen dataclass's generated `__init__` stores each field through `object.__setattr__`
(its own `__setattr__` refuses), about 150 ns a field on this project's machines: building
`Facts` (17 fields) cost more than most checks that read it, and the policy core builds one
per SMTP command, the walk check a few records per contact. Storing through the slots' own
descriptors costs about a third of that, and cheaper still are plain attribute stores, made
while the new instance is switched to an open twin class with the very same slots (CPython
allows the `__class__` switch between such classes) and switched back after: `Facts` costs
about 0.8 µs that way instead of 1.35 µs through the descriptors. `fill_slots` swaps in such
an `__init__`, with the same parameters, defaults and default factories; the class stays
frozen (assigning still raises), and equality, hashing, repr and `dataclasses.replace` are
the dataclass's own. A subclass (which may add slots) is filled through the descriptors.

It refuses the classes it cannot reproduce exactly (no `__post_init__`, every field a plain
init field) and checks at import time that the new signature is the generated one.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, TypeVar

C = TypeVar("C", bound=type)


class _Factory:
    """The value of "no argument given" for a field with a default factory (shown as
    dataclasses show theirs)."""

    def __repr__(self) -> str:
        return "<factory>"


_FACTORY = _Factory()


def fill_slots(cls: C) -> C:
    """Decorate a `@dataclass(frozen=True, slots=True)` class (put this line above it)."""
    params = dataclasses.fields(cls)
    if not (cls.__dataclass_params__.frozen and "__slots__" in cls.__dict__):  # type: ignore[attr-defined]
        raise TypeError(f"{cls.__name__}: fill_slots is for frozen slotted dataclasses")
    if hasattr(cls, "__post_init__") or any(not f.init or f.kw_only for f in params):
        raise TypeError(f"{cls.__name__}: fill_slots cannot reproduce this __init__")
    env: dict[str, Any] = {"_FACTORY": _FACTORY, "_cls": cls, "_type": type}
    args, body, open_body = [], [], []
    for i, f in enumerate(params):
        env[f"_set{i}"] = cls.__dict__[f.name].__set__
        value = f.name
        if f.default is not dataclasses.MISSING:
            env[f"_default{i}"] = f.default
            args.append(f"{f.name}=_default{i}")
        elif f.default_factory is not dataclasses.MISSING:
            env[f"_factory{i}"] = f.default_factory
            args.append(f"{f.name}=_FACTORY")
            value = f"_factory{i}() if {f.name} is _FACTORY else {f.name}"
        else:
            args.append(f.name)
        body.append(f"        _set{i}(self, {value})")
        open_body.append(f"        self.{f.name} = {value}")
    if cls.__bases__ == (object,):
        # The instance spends its `__init__` as an object of an open twin class with the
        # very same slots (so CPython allows the `__class__` switch both ways): plain
        # attribute stores there are the interpreter's cheapest, about half the cost of
        # the descriptors' `__set__` calls, and this `__init__` runs for every `Facts`.
        # Only for `cls` itself: a subclass may add slots of its own.
        env["_Open"] = type(f"_{cls.__name__}Open", (), {"__slots__": cls.__dict__["__slots__"]})
        env["_switch"] = object.__setattr__
        lines = ["    if _type(self) is _cls:", "        _switch(self, '__class__', _Open)",
                 *open_body, "        self.__class__ = _cls", "    else:", *body]  # fmt: skip
    else:
        lines = [line[4:] for line in body]
    source = f"def __init__(self, {', '.join(args)}):\n" + "\n".join(lines) + "\n"
    exec(source, env)
    init = env["__init__"]
    generated_init = cls.__dict__["__init__"]
    generated = inspect.signature(generated_init)
    mine = inspect.signature(init)
    same = [(p.name, p.kind) for p in generated.parameters.values()] == [
        (p.name, p.kind) for p in mine.parameters.values()
    ]
    if not same:
        raise TypeError(f"{cls.__name__}: fill_slots made another signature: {mine}")
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = generated_init.__doc__
    type.__setattr__(cls, "__init__", init)
    return cls
