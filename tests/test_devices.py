"""Device, precision and threads are chosen by the machine: bf16 only where the hardware computes it natively
(and measurably faster), fp16 with a loss scaler on CUDA without bf16, fp32 otherwise; one thread per core."""

import json

import pytest
import torch

from rotoscope import devices


@pytest.fixture
def cpu_says(monkeypatch):
    """Make the CPU's capability queries say what a test needs: cpu_says(amx=..., avx512_bf16=..., onednn=...)."""
    def say(amx=False, avx512_bf16=False, onednn=True, capability="AVX512", machine="x86_64"):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
        monkeypatch.setattr(devices, "onednn_bf16", lambda: onednn)
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
        monkeypatch.setattr(devices.platform, "machine", lambda: machine)
        devices._cpu_bf16_timing.cache_clear()
    yield say
    devices._cpu_bf16_timing.cache_clear()


@pytest.fixture
def conv_timing(monkeypatch):
    """Replace the bf16-vs-fp32 micro-benchmark by given timings, counting how often it runs."""
    calls = []

    def set_ratio(bf16_ms, fp32_ms=10.0):
        def bench():
            calls.append(1)
            return {"fp32_ms": fp32_ms, "bf16_ms": bf16_ms}
        monkeypatch.setattr(devices, "bf16_benchmark", bench)
        devices._cpu_bf16_timing.cache_clear()
        return calls
    return set_ratio


CPU = torch.device("cpu")


def test_auto_is_fp32_on_a_cpu_without_native_bf16(cpu_says, conv_timing):
    cpu_says(capability="AVX2", onednn=False)
    calls = conv_timing(1.0)  # even if a benchmark said bf16 is fast, the queries say it is emulated
    choice = devices.resolve_precision("auto", CPU)
    assert choice.value == "fp32"
    assert choice.line() == "precision: fp32 (this CPU has no native bf16: AVX2)"
    assert calls == []  # nothing to measure: no bf16 claimed


def test_auto_is_bf16_where_native_and_faster(cpu_says, conv_timing):
    cpu_says(amx=True)
    conv_timing(bf16_ms=2.5, fp32_ms=10.0)
    choice = devices.resolve_precision("auto", CPU)
    assert choice.value == "bf16" and "AMX" in choice.reason and "4.0x" in choice.reason
    cpu_says(avx512_bf16=True)
    conv_timing(bf16_ms=5.0, fp32_ms=10.0)
    assert devices.resolve_precision("auto", CPU).value == "bf16"
    assert devices.cpu_class() == "AVX-512 BF16"


def test_a_cpu_that_claims_bf16_but_emulates_it_gets_fp32(cpu_says, conv_timing):
    """An ISA cap or a hypervisor can make the queries lie: the measurement decides."""
    cpu_says(amx=True)
    conv_timing(bf16_ms=76.0, fp32_ms=10.0)
    choice = devices.resolve_precision("auto", CPU)
    assert choice.value == "fp32" and "7.6x" in choice.reason


def test_an_onednn_capped_to_avx2_is_not_native_bf16(cpu_says, conv_timing):
    cpu_says(amx=True, avx512_bf16=True, onednn=False)  # ONEDNN_MAX_CPU_ISA=AVX2 on an AMX machine
    calls = conv_timing(1.0)
    assert devices.resolve_precision("auto", CPU).value == "fp32"
    assert devices.cpu_class() == "AVX-512" and calls == []


def test_cpu_classes(cpu_says):
    cpu_says(amx=True, avx512_bf16=True)
    assert devices.cpu_class() == "AMX"
    cpu_says()
    assert devices.cpu_class() == "AVX-512"
    cpu_says(capability="AVX2", onednn=False)
    assert devices.cpu_class() == "AVX2"
    cpu_says(capability="DEFAULT", machine="aarch64", onednn=False)
    assert devices.cpu_class() == "arm64"


def test_the_measurement_is_made_once_per_machine_and_kept_under_rotoscope_home(cpu_says, conv_timing,
                                                                                 rotoscope_home):
    cpu_says(amx=True)
    calls = conv_timing(bf16_ms=2.0)
    assert devices.resolve_precision("auto", CPU).value == "bf16"
    devices._cpu_bf16_timing.cache_clear()  # a new process: only the file remains
    assert devices.resolve_precision("auto", CPU).value == "bf16"
    assert len(calls) == 1
    store = json.loads((rotoscope_home / "machine.json").read_text())
    (section,) = store.values()
    assert section[devices.BF16_KEY] == {"fp32_ms": 10.0, "bf16_ms": 2.0}
    # another machine (here: the same one under an ISA cap) has its own section and is measured again
    cpu_says(avx512_bf16=True)
    devices.resolve_precision("auto", CPU)
    assert len(calls) == 2 and len(json.loads((rotoscope_home / "machine.json").read_text())) == 2


def test_a_broken_machine_file_is_measured_again(cpu_says, conv_timing, rotoscope_home):
    cpu_says(amx=True)
    calls = conv_timing(bf16_ms=2.0)
    rotoscope_home.mkdir(parents=True, exist_ok=True)
    (rotoscope_home / "machine.json").write_text("[1, 2")
    assert devices.resolve_precision("auto", CPU).value == "bf16" and len(calls) == 1
    assert isinstance(json.loads((rotoscope_home / "machine.json").read_text()), dict)


def test_the_real_benchmark_times_both_formats_on_one_thread_and_leaves_the_threads_as_they_were():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        t = devices.bf16_benchmark()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert t["fp32_ms"] > 0 and t["bf16_ms"] > 0 and t["threads"] == 1


def test_cuda_takes_bf16_where_supported_else_fp16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Test GPU")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    cuda = torch.device("cuda")
    assert devices.resolve_precision("auto", cuda).value == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    choice = devices.resolve_precision("auto", cuda)
    assert choice.value == "fp16" and "scaler" in choice.reason


def test_a_gpu_trains_in_bf16_but_paints_in_fp32_unless_asked(monkeypatch):
    """The filter networks are too small for a GPU's matrix units: bf16 painted them slower (speed.md, "GPU")."""
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Test GPU")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    cuda = torch.device("cuda")
    assert devices.resolve_precision("auto", cuda).value == "bf16"
    paint = devices.paint_precision("auto", cuda)
    assert paint.value == "fp32" and "GPU" in paint.reason
    assert devices.paint_precision("bf16", cuda) == devices.Choice("bf16", "as asked")
    assert devices.paint_precision("auto", CPU) == devices.resolve_precision("auto", CPU)


def test_asked_precisions_are_taken_as_asked_and_unknown_ones_refused():
    for p in ("bf16", "fp16", "fp32"):
        assert devices.resolve_precision(p, CPU) == devices.Choice(p, "as asked")
    with pytest.raises(ValueError, match="precision must be one of"):
        devices.resolve_precision("int3", CPU)


def test_auto_device_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "mps_available", lambda: True)
    assert devices.pick_device("auto").type == "mps"
    assert devices.resolve_precision("auto", torch.device("mps")).value == "fp32"
    monkeypatch.setattr(devices, "mps_available", lambda: False)
    assert devices.pick_device("auto").type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert devices.pick_device("auto").type == "cuda"
    assert devices.pick_device("cpu").type == "cpu"


def test_autocast_runs_each_format():
    a, b = torch.rand(8, 8), torch.rand(8, 8)
    for precision, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp32", torch.float32)):
        with devices.autocast(CPU, precision):
            assert (a @ b).dtype == dtype
    with pytest.raises(ValueError, match="resolve 'auto' first"):
        devices.autocast(CPU, "auto")


def test_physical_cores_count_hyperthreads_once(tmp_path, monkeypatch):
    for cpu, siblings in {0: "0,2", 1: "1,3", 2: "0,2", 3: "1,3"}.items():
        topo = tmp_path / f"cpu{cpu}" / "topology"
        topo.mkdir(parents=True)
        (topo / "thread_siblings_list").write_text(siblings + "\n")
    monkeypatch.setattr(devices.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert devices.physical_cores(str(tmp_path)) == 2
    monkeypatch.setattr(devices.os, "sched_getaffinity", lambda pid: {0, 2})  # one core's two threads
    assert devices.physical_cores(str(tmp_path)) == 1


def test_threads_follow_the_cores_unless_told(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setenv("ROTOSCOPE_THREADS", "1")
        assert devices.configure_threads() == 1 and torch.get_num_threads() == 1
        monkeypatch.delenv("ROTOSCOPE_THREADS")
        monkeypatch.setattr(devices, "physical_cores", lambda: 2)
        assert devices.configure_threads() == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(not devices.platform.libc_ver()[0] == "glibc", reason="a glibc setting")
def test_freed_frame_buffers_are_reused_instead_of_mapped_afresh():
    """A render allocates frame-sized arrays every frame; after keep_freed_memory they stop costing page faults (a
    fresh mapping is zeroed page by page, up to 2048 faults for 8 MiB)."""
    import subprocess
    import sys

    script = ("import resource, sys, numpy as np\n"
              "from rotoscope import devices\n"
              "if sys.argv[1] == 'keep': assert devices.keep_freed_memory()\n"
              "def faults(): return resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
              "for _ in range(3): np.ones(1 << 21, np.float32)\n"  # settle: glibc may adapt its threshold once
              "f = faults()\n"
              "for _ in range(20): a = np.ones(1 << 21, np.float32); b = np.ones(1 << 21, np.float32); del a, b\n"
              "print((faults() - f) / 40)\n")
    per = {mode: float(subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True,
                                      check=True, timeout=120).stdout) for mode in ("keep", "default")}
    assert per["keep"] < 100, per  # measured: 13 a buffer
    assert per["default"] > 5 * max(per["keep"], 1), per  # measured: 487 (glibc's own threshold spares a few)
