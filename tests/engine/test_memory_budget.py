"""The memory budget (initjax.engine.executor.resolve_budget): where it comes from (argument,
environment, an accelerator's free memory, the host's available RAM, the 2 GiB fallback), that the
result records it, and refusals that summarize the network instead of listing its widths.

The device and the host are faked: a stand-in device object with ``memory_stats()`` and a
``/proc/meminfo`` written to a temporary file, so every branch runs on the CPU."""

import math

import pytest

from initjax import NetworkConfig, propagate
from initjax.engine import executor
from initjax.engine.executor import (
    BUDGET_FLOOR,
    DEFAULT_BUDGET,
    describe_widths,
    plan_chunks,
    resolve_budget,
)
from initjax.network import Network

GiB = 2**30


class FakeDevice:
    """A device as resolve_budget sees one: a platform, an id and memory_stats()."""

    def __init__(self, stats, platform="gpu", id=0):
        self.platform, self.id, self._stats = platform, id, stats

    def memory_stats(self):
        if isinstance(self._stats, Exception):
            raise self._stats
        return self._stats


def _quantized(nbytes):
    """The documented rounding, recomputed: down to 1/16 of the power of two at or below."""
    step = 2 ** (int(math.log2(nbytes)) - 4)
    return (nbytes // step) * step


@pytest.fixture
def meminfo(tmp_path, monkeypatch):
    """``meminfo(kib)`` makes the host report ``kib`` KiB of MemAvailable; no environment budget."""
    monkeypatch.delenv("INITJAX_MEMORY_BUDGET", raising=False)
    path = tmp_path / "meminfo"
    monkeypatch.setattr(executor, "MEMINFO", path)

    def set_available(kib):
        path.write_text(f"MemTotal: 99999999 kB\nMemFree: 123 kB\nMemAvailable: {kib} kB\n")

    return set_available


def test_argument_then_environment_then_host_ram(meminfo, monkeypatch):
    meminfo(16 * 2**20)  # 16 GiB available
    assert resolve_budget(3e9) == (3e9, "argument", "the memory_budget argument")
    host = resolve_budget()
    assert host.source == "host-ram" and host.nbytes == 4 * GiB  # a quarter, already a 1/16 step
    assert "16.0 GiB of RAM available" in host.detail
    monkeypatch.setenv("INITJAX_MEMORY_BUDGET", "1.5GiB")
    assert resolve_budget()[:2] == (1.5 * GiB, "environment")
    monkeypatch.setenv("INITJAX_MEMORY_BUDGET", "64e9")
    assert resolve_budget()[:2] == (64e9, "environment")
    assert resolve_budget(1e9).source == "argument"  # the argument wins over the environment


def test_host_ram_is_shared_by_cpu_devices_floored_and_rounded(meminfo):
    meminfo(10_000_000)  # 9.54 GiB: a quarter is 2.384 GiB, rounded down to 2.375 GiB (19/16 of 2)
    quarter = 10_000_000 * 1024 / 4
    one = resolve_budget()
    assert one.nbytes == _quantized(quarter) == 2.375 * GiB
    cpus = [FakeDevice(None, platform="cpu", id=i) for i in range(4)]
    four = resolve_budget(devices=cpus)
    assert four.nbytes == _quantized(quarter / 4) and "shared by 4 CPU devices" in four.detail
    meminfo(1000)  # a nearly full machine: the floor
    assert resolve_budget().nbytes == BUDGET_FLOOR


def test_fallback_when_the_host_cannot_be_read(meminfo, monkeypatch):
    meminfo(0)
    monkeypatch.setattr(executor, "MEMINFO", executor.MEMINFO.parent / "missing")

    def no_sysconf(name):
        raise ValueError(name)

    monkeypatch.setattr(executor.os, "sysconf", no_sysconf)
    assert resolve_budget()[:2] == (DEFAULT_BUDGET, "fallback")


def test_an_accelerator_gives_three_quarters_of_its_free_memory(meminfo):
    gpu = FakeDevice({"bytes_limit": 100e9, "bytes_in_use": 20e9, "peak_bytes_in_use": 30e9})
    budget = resolve_budget(devices=[gpu])
    assert budget.source == "device" and budget.nbytes == _quantized(0.75 * 80e9) == 27 * 2**31
    assert "gpu:0" in budget.detail and "bytes_limit - bytes_in_use" in budget.detail
    # several devices: the least free one sizes the chunk on every device
    fuller = FakeDevice({"bytes_limit": 100e9, "bytes_in_use": 90e9}, id=1)
    assert resolve_budget(devices=[gpu, fuller]).nbytes == _quantized(0.75 * 10e9)
    # the H200 at 139 GiB with nothing in use: far above the old 2 GiB; the fast path's
    # 3.97 GiB seed at width 65,536 x depth 100 fits
    h200 = FakeDevice({"bytes_limit": 139 * GiB, "bytes_in_use": 0})
    assert resolve_budget(devices=[h200]).nbytes > 100 * GiB
    # no statistics (or a backend that fails to give them): the 2 GiB fallback, said so
    for stats in (None, {}, RuntimeError("no stats"), {"bytes_in_use": 5}):
        budget = resolve_budget(devices=[FakeDevice(stats)])
        assert budget[:2] == (DEFAULT_BUDGET, "fallback") and "memory_stats" in budget.detail


@pytest.mark.parametrize("text", ["lots", "-5", "0", "nan", "inf", "3 parsecs", "1e999"])
def test_bad_environment_budget_is_refused_naming_it(monkeypatch, text):
    monkeypatch.setenv("INITJAX_MEMORY_BUDGET", text)
    with pytest.raises(ValueError, match="INITJAX_MEMORY_BUDGET="):
        resolve_budget()


def test_plan_chunks_sizes_chunks_to_the_budget(meminfo):
    meminfo(4 * 2**20)  # 4 GiB available: a 1 GiB budget
    plan = plan_chunks(100, 100 * 2**20, chunk_size=None, memory_budget=None, devices=None,
                       impl="philox2x32", what="x")
    assert plan.budget.nbytes == GiB and plan.chunk_size == 10 and plan.n_devices == 1
    refusal = r"needs about 2\.00 GiB .*budget is 1\.00 GiB \(0\.25 x the 4\.0 GiB"
    with pytest.raises(MemoryError, match=refusal):
        plan_chunks(1, 2 * GiB, chunk_size=None, memory_budget=None, devices=None,
                    impl="philox2x32", what="x")


# --- the result records the budget ----------------------------------------------------------------
TINY = NetworkConfig(depth=2, width=8, batch=4, activation="tanh")


def test_the_result_records_the_budget_and_its_source(meminfo, monkeypatch, tmp_path):
    meminfo(8 * 2**20)
    result = propagate(TINY, seeds=2)
    assert (result.memory_budget, result.memory_budget_source) == (2 * GiB, "host-ram")
    assert result.to_json_dict()["memory_budget"] == {"bytes": 2 * GiB, "source": "host-ram"}
    again = type(result).load(result.save(tmp_path / "r"))
    assert (again.memory_budget, again.memory_budget_source) == (2 * GiB, "host-ram")
    assert propagate(TINY, seeds=2, memory_budget=5e8).memory_budget_source == "argument"
    monkeypatch.setenv("INITJAX_MEMORY_BUDGET", "3e9")
    env = propagate(TINY, seeds=2)
    assert (env.memory_budget, env.memory_budget_source) == (3e9, "environment")
    blocks = propagate(Network.residual_mlp(2, 8, batch=4), seeds=2, memory_budget=7e8)
    assert (blocks.memory_budget, blocks.memory_budget_source) == (7e8, "argument")
    loaded = type(blocks).load(blocks.save(tmp_path / "b"))
    assert (loaded.memory_budget, loaded.memory_budget_source) == (7e8, "argument")


# --- refusals summarize the network ---------------------------------------------------------------
def test_widths_are_summarized():
    assert describe_widths((65536,) * 101) == "100 layers of width 65,536 (input 65,536)"
    mixed = describe_widths((784,) + (1000,) * 3 + (10,))
    assert mixed == "4 layers, widths 784, 1000 x 3, 10 (input first)"
    assert describe_widths((784, 10)) == "1 layer of width 10 (input 784)"
    blocks = describe_widths((3, 3, 5, 5, 5, 3), "block")
    assert blocks == "5 blocks, widths 3 x 2, 5 x 3, 3 (input first)"


def test_a_refusal_summarizes_a_101_layer_network():
    """The issue's case: width 65,536 x depth 100 with a too small budget. The message names the
    estimate, the budget and its origin, and the network in a few words, not 101 widths."""
    config = NetworkConfig(depth=100, width=65536, batch=16, init="he_normal", activation="relu")
    with pytest.raises(MemoryError) as info:
        propagate(config, method="fast", memory_budget=2 * GiB)
    message = str(info.value)
    assert "100 layers of width 65,536 (input 65,536), batch 16" in message
    assert "budget is 2.00 GiB (the memory_budget argument)" in message
    assert "65536, 65536" not in message and len(message) < 400
    mixed = NetworkConfig(depth=4, width=(1000, 1000, 1000, 10), in_width=784, batch=8)
    with pytest.raises(MemoryError, match=r"4 layers, widths 784, 1000 x 3, 10 \(input first\), "
                                          r"batch 8"):
        propagate(mixed, memory_budget=1000)
    deep = Network.residual_mlp(100, 1024, batch=16)
    refusal = (r"100 blocks of width 1,024 \(input 1,024\), batch 16\); "
               r".*budget is 9.31e-07 GiB \(1,000 bytes\)")
    with pytest.raises(MemoryError, match=refusal):
        propagate(deep, memory_budget=1000)
