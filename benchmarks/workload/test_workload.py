"""The benchmark workload: BENCH_TESTS tests, each running a small command in its VM
through pyinfra's connector, the same body under every strategy."""

import os

import pytest

N = int(os.environ.get("BENCH_TESTS", "100"))


@pytest.mark.parametrize("i", range(N))
def test_small_command(i: int, bench_vm) -> None:
    out = bench_vm.run(f"echo {i} > /tmp/w{i} && cat /tmp/w{i}").stdout
    assert out.strip() == str(i)
