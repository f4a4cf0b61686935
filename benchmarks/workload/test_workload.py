"""The seed's workload (ADR-0004's table): BENCH_TESTS tests (100), each doing 5 s x
BENCH_SCALE of work, the same body under every strategy (see conftest.py).

BENCH_MIX chooses what the tests need:
  seed       every test uses its worker's VM;
  lifecycle  the same, but 20 % take a fresh VM (bench_fresh(), the seed's lifecycle tests)
             and 10 % are marked bench_reset (orch_reset under orch), spread evenly
             (tests 3, 8, 13, ... fresh; 5, 15, ... reset) so that every xdist worker
             gets its share;
  pollute    10 % of the tests pollute their VM (tests 7, 17, 27, ...: a file in /etc, a
             user, a process left running); every test first looks for what a polluter
             leaves (on its worker's VM, or with BENCH_VM=fresh on a fresh one);
  fresh      every test takes a fresh VM (micro-benchmark of fresh_vm());
  reset      every test is marked bench_reset (micro-benchmark of the reset).
"""

import os

import pytest

N = int(os.environ.get("BENCH_TESTS", "100"))
MIX = os.environ.get("BENCH_MIX", "seed")
FRESH_VMS = os.environ.get("BENCH_VM") == "fresh"


def kind(i: int) -> str:
    if MIX in ("fresh", "reset"):
        return MIX
    if MIX == "pollute":
        return "polluter" if i % 10 == 7 else "plain"
    if MIX == "lifecycle":
        if i % 10 in (3, 8):
            return "fresh"
        if i % 10 == 5:
            return "reset"
    return "plain"


def params() -> list:
    out = []
    for i in range(N):
        k = kind(i)
        marks = [pytest.mark.bench_reset] if k == "reset" else []
        out.append(pytest.param(i, k, marks=marks, id=f"{i}-{k}"))
    return out


if MIX != "pollute":

    @pytest.mark.parametrize(("i", "kind"), params())
    def test_seed_workload(i: int, kind: str, bench_target, work) -> None:
        if kind == "fresh":
            bench_target()  # vm = fresh_vm(), timed as the test sees it
        work()

elif FRESH_VMS:

    @pytest.mark.parametrize(("i", "kind"), params())
    def test_pollute_workload(i: int, kind: str, bench_fresh, work, bench_pollution) -> None:
        bench_pollution(bench_fresh(), i, kind == "polluter")  # a VM of its own
        work()

else:
    # orch_worker named here, not reached through another fixture at run time: orch's
    # isolation checks the tests whose fixtures (as collected) include it

    @pytest.mark.parametrize(("i", "kind"), params())
    def test_pollute_workload(i: int, kind: str, orch_worker, work, bench_pollution) -> None:
        bench_pollution(orch_worker, i, kind == "polluter")
        work()
