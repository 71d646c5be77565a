"""Model label slots shared by worker processes through one inherited file."""

from __future__ import annotations

import os
import subprocess
import sys

from infermeter.proxy.model_slots import ModelSlots


def test_two_workers_share_one_cap() -> None:
    a = ModelSlots.create(3)
    b = ModelSlots(os.dup(a.fd), 3)  # a second worker's view of the same file
    assert a.claim("x")
    assert b.claim("y")
    assert b.known("x")  # claimed by the other worker
    assert a.claim("y")  # already there: no new slot
    assert a.claim("z")
    assert not b.claim("w")  # 3 slots in all, not 3 per worker
    assert b.full
    assert a.names() == b.names() == ["x", "y", "z"]


def test_unicode_and_long_names_round_trip() -> None:
    a = ModelSlots.create(4)
    name = "modèle-" + "é" * 200
    assert a.claim(name)
    b = ModelSlots(os.dup(a.fd), 4)
    assert b.known(name)
    assert not b.known("other")


def test_claims_from_other_processes_race_without_exceeding_the_cap() -> None:
    slots = ModelSlots.create(10)
    code = (
        "import sys\n"
        "from infermeter.proxy.model_slots import ModelSlots\n"
        "s = ModelSlots(int(sys.argv[1]), 10)\n"
        "print(sum(s.claim(f'{sys.argv[2]}-{i}') for i in range(20)))\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(slots.fd), tag],
            pass_fds=(slots.fd,),
            stdout=subprocess.PIPE,
        )
        for tag in ("a", "b", "c")
    ]
    won = [int(p.communicate(timeout=30)[0]) for p in procs]
    assert sum(won) == 10
    assert len(slots.names()) == 10
