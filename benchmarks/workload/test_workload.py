"""The seed's workload (ADR-0004's table): BENCH_TESTS tests (100), each doing 5 s x
BENCH_SCALE of work, the same body under every strategy (see conftest.py).

BENCH_MIX chooses what the tests need:
  seed       every test uses its worker's VM;
  lifecycle  the same, but 20 % take a fresh VM (bench_fresh(), the seed's lifecycle tests)
             and 10 % are marked bench_reset (orch_reset under orch), spread evenly
             (tests 3, 8, 13, ... fresh; 5, 15, ... reset) so that every xdist worker
             gets its share;
  fresh      every test takes a fresh VM (micro-benchmark of fresh_vm());
  reset      every test is marked bench_reset (micro-benchmark of the reset).
"""

import os

import pytest

N = int(os.environ.get("BENCH_TESTS", "100"))
MIX = os.environ.get("BENCH_MIX", "seed")


def kind(i: int) -> str:
    if MIX in ("fresh", "reset"):
        return MIX
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


@pytest.mark.parametrize(("i", "kind"), params())
def test_seed_workload(i: int, kind: str, bench_target, work) -> None:
    if kind == "fresh":
        bench_target()  # vm = fresh_vm(), timed as the test sees it
    work()
