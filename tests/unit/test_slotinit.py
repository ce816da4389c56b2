"""fill_slots: the same constructor as the dataclass's own, and the class stays frozen."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field

import pytest

from mxguard.policy.facts import Facts
from mxguard.slotinit import fill_slots


@dataclass(frozen=True, slots=True)
class Plain:
    a: int
    b: str = "b"
    c: list[int] = field(default_factory=list)


@fill_slots
@dataclass(frozen=True, slots=True)
class Filled:
    a: int
    b: str = "b"
    c: list[int] = field(default_factory=list)


def test_same_signature_and_values_as_the_generated_init() -> None:
    plain, filled = inspect.signature(Plain), inspect.signature(Filled)
    assert [(p.name, p.kind) for p in plain.parameters.values()] == [
        (p.name, p.kind) for p in filled.parameters.values()
    ]
    for args, kwargs in [((1,), {}), ((1, "x"), {}), ((), {"a": 2, "c": [3]}), ((4, "y", [5]), {})]:
        assert dataclasses.astuple(Filled(*args, **kwargs)) == dataclasses.astuple(
            Plain(*args, **kwargs)
        )
    assert Filled(1).c is not Filled(1).c  # a fresh default per instance
    with pytest.raises(TypeError):
        Filled()  # type: ignore[call-arg]


def test_still_frozen_hashable_and_replaceable() -> None:
    x = Filled(1, "z", [])
    with pytest.raises(dataclasses.FrozenInstanceError):
        x.a = 2  # type: ignore[misc]
    assert x == Filled(1, "z", []) and x != Filled(2, "z", [])
    assert dataclasses.replace(x, a=3).a == 3
    assert repr(x) == "Filled(a=1, b='z', c=[])"
    assert Facts.__init__.__qualname__ == "Facts.__init__"


def test_refuses_what_it_cannot_reproduce() -> None:
    @dataclass
    class Mutable:
        a: int

    @dataclass(frozen=True, slots=True)
    class Post:
        a: int

        def __post_init__(self) -> None:
            pass

    @dataclass(frozen=True, slots=True)
    class KeywordOnly:
        a: int = field(kw_only=True)

    for cls in (Mutable, Post, KeywordOnly):
        with pytest.raises(TypeError):
            fill_slots(cls)


def test_the_instance_ends_its_init_as_the_class_itself() -> None:
    # the fast path fills the slots as an open twin class, then switches back
    x = Filled(1)
    assert type(x) is Filled and x.c == [] and (x.a, x.b) == (1, "b")
    with pytest.raises(dataclasses.FrozenInstanceError):
        x.b = "c"  # type: ignore[misc]

    class Sub(Filled):  # a subclass keeps the descriptors' path, and its type
        pass

    s = Sub(2, "s")
    assert type(s) is Sub and dataclasses.astuple(s) == (2, "s", [])
