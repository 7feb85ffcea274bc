"""NumPy's kernels: its AVX2 ones on an AMD Zen 4 (whose AVX-512 sort is microcoded), NumPy's own choice elsewhere,
and never over the user's NPY_DISABLE_CPU_FEATURES."""

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from rotoscope.numpy_kernels import AVX512_GROUPS, ENV, cpu_fields, features_to_disable, is_zen4


def cpuinfo(vendor="AuthenticAMD", family=25, flags="fpu sse2 avx2 avx512f avx512bw", processors=2):
    one = f"processor\t: {{i}}\nvendor_id\t: {vendor}\ncpu family\t: {family}\nmodel\t\t: 17\nflags\t\t: {flags}\n"
    return "\n".join(one.format(i=i) for i in range(processors))


ZEN4 = cpuinfo()
CASES = {
    "zen 4": (ZEN4, True),
    "zen 3 (same family, no AVX-512)": (cpuinfo(flags="fpu sse2 avx2"), False),
    "zen 5 (family 1Ah)": (cpuinfo(family=26), False),
    "intel with AVX-512": (cpuinfo(vendor="GenuineIntel", family=6), False),
    "no cpu family line": ("vendor_id\t: AuthenticAMD\nflags\t\t: avx512f\n", False),
    "empty": ("", False),
}


@pytest.mark.parametrize("name", CASES)
def test_only_a_zen4_is_named_zen4(name):
    text, zen4 = CASES[name]
    assert is_zen4(text) is zen4


def test_the_first_processors_fields_are_read():
    assert cpu_fields(cpuinfo(processors=3)) == {"processor": "0", "vendor_id": "AuthenticAMD", "cpu family": "25",
                                                  "model": "17", "flags": "fpu sse2 avx2 avx512f avx512bw"}


def test_a_zen4_with_numpy_2_4_gets_numpys_avx2_kernels():
    assert features_to_disable(ZEN4, "2.4.6", {}) == AVX512_GROUPS == "X86_V4 AVX512_ICL AVX512_SPR"
    assert features_to_disable(ZEN4, "3.0.0", {}) == AVX512_GROUPS


@pytest.mark.parametrize("numpy_version", ["2.3.5", "1.26.4", None, "dev"])
def test_numpy_before_2_4_or_unknown_keeps_its_choice(numpy_version):
    assert features_to_disable(ZEN4, numpy_version, {}) is None


@pytest.mark.parametrize("users", ["", "AVX512F", AVX512_GROUPS])
def test_the_users_setting_is_never_replaced_even_empty(users):
    assert features_to_disable(ZEN4, "2.4.6", {ENV: users}) is None


@pytest.mark.parametrize("name", [n for n, (_, zen4) in CASES.items() if not zen4])
def test_other_cpus_keep_numpys_choice(name):
    assert features_to_disable(CASES[name][0], "2.4.6", {}) is None


PROBE = ("import os, json, rotoscope, numpy\n"
         "from numpy._core._multiarray_umath import __cpu_features__ as f\n"
         "print(json.dumps([os.environ.get('NPY_DISABLE_CPU_FEATURES'), f.get('AVX512_SKX', False)]))")


def probe(**env):
    base = {k: v for k, v in os.environ.items() if k != ENV}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**base, **env}, capture_output=True, text=True,
                         check=True, timeout=120)
    return json.loads(out.stdout)


def test_importing_rotoscope_first_sets_what_this_machine_needs_before_numpy_loads():
    """On this machine, whatever it is: the variable as features_to_disable() says, and NumPy then without
    AVX-512 kernels where it was set."""
    want = features_to_disable(Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else "",
                               version("numpy"), {})
    value, numpy_avx512 = probe()
    assert value == want
    if want:
        assert numpy_avx512 is False


def test_importing_rotoscope_leaves_an_empty_setting_alone():
    value, _ = probe(**{ENV: ""})
    assert value == ""
