"""Workers reading byte ranges of a plain file must see exactly the blocks that
reading the file through the main process gives: block boundaries decide what
"message repeated" can refer to and how connection tallies are grouped."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from mxguard.logs import inputs
from mxguard.logs.analysis import Analysis, FileInfo, Options
from mxguard.logs.inputs import InputError, Source
from mxguard.logs.pipeline import run


def _outcome(path: Path, size: int, direct: bool) -> list[bytes] | str:
    src = Source(str(path))
    try:
        if not direct:
            return list(src.blocks(size))
        data = path.read_bytes()
        return [data[a:b] for a, b in src.spans(size)]
    except InputError as e:
        return str(e)
    finally:
        src.close()


@pytest.mark.parametrize("probe", [3, inputs.CUT_PROBE])
def test_spans_cut_where_blocks_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, probe: int
) -> None:
    monkeypatch.setattr(inputs, "CUT_PROBE", probe)
    rng = random.Random(7)
    shapes = [b"ab\n", b"abcdefgh\n", b"a" * 50 + b"\n", b"ab", b"a" * 300 + b"\n"]
    seen_error = seen_blocks = False
    for i in range(60):
        shape = shapes[i % len(shapes)]
        path = tmp_path / f"f{i}.log"
        path.write_bytes(bytes(rng.choice(shape) for _ in range(rng.randint(0, 3000))))
        for size in (1, 7, 64, 1000):
            expected = _outcome(path, size, direct=False)
            assert _outcome(path, size, direct=True) == expected, (path.name, size)
            seen_error |= isinstance(expected, str)
            seen_blocks |= isinstance(expected, list) and len(expected) > 1
    assert seen_error and seen_blocks  # both kinds of outcome were compared


def test_plain_files_only_are_read_directly(tmp_path: Path) -> None:
    import gzip

    plain = tmp_path / "mail.log"
    plain.write_bytes(b"x\n")
    packed = tmp_path / "mail.log.gz"
    packed.write_bytes(gzip.compress(b"x\n"))
    for path, direct in ((plain, True), (packed, False)):
        src = Source(str(path))
        try:
            assert src.direct is direct
        finally:
            src.close()


def test_workers_reading_spans_or_blocks_agree(tmp_path: Path) -> None:
    lines = []
    for i in range(12_000):  # about 1.3 MB: three blocks
        lines.append(
            f"2024-01-05T10:{i // 60 % 60:02d}:{i % 60:02d}.000001+00:00 mx1 "
            f"postfix/postscreen[1]: CONNECT from [192.0.2.{i % 50}]:1 to [192.0.2.1]:25\n"
        )
        if i % 7 == 0:
            lines.append(
                f"2024-01-05T10:{i // 60 % 60:02d}:{i % 60:02d}.000002+00:00 mx1 "
                f"postfix/postscreen[1]: DISCONNECT [192.0.2.{i % 50}]:1\n"
            )
    path = tmp_path / "mail.log"
    path.write_text("".join(lines))

    def report(piped: bool) -> dict[str, object]:
        src = Source(str(path))
        src.direct = not piped
        a = Analysis(Options(), [FileInfo(path=str(path), default_name="mail")])
        try:
            run(a, [src], jobs=2)
        finally:
            src.close()
        return a.finish()

    direct = report(piped=False)
    assert direct["files"][0]["lines"] == len(lines)  # type: ignore[index]
    assert direct == report(piped=True)
