"""`draw_population` calls `Random._randbelow` where it used to call `randrange`, `randint`
and `choice`: the population (every run's numbers) depends on these drawing alike."""

from __future__ import annotations

from random import Random


def test_randbelow_draws_as_the_public_calls() -> None:
    public, direct = Random("population:3"), Random("population:3")
    below = direct._randbelow  # type: ignore[attr-defined]
    seq = [f"u{i}" for i in range(199)]
    for i in range(2000):
        n = 1 + i % 1000
        assert public.randrange(n) == below(n)
        assert public.randint(1, 3) == 1 + below(3)
        assert public.choice(seq) == seq[below(len(seq))]
        assert public.randrange(10**6) == below(10**6)
        assert public.random() == direct.random()
