"""Mutation testing of the modules that guard data, each against its own tests only: the share of mutants killed.

Not part of the test suite (minutes to hours on 2 cores). For each module it makes a scratch copy of the project
(src/ and the module's test files with their conftest.py), runs mutmut there (`pip install mutmut`; mutmut 3
mutates functions in place behind a trampoline and runs only the tests that reach each function), and prints
killed / all mutants per module. Nothing in the working tree is touched.

    python tools/mutation.py                      # every module below
    python tools/mutation.py filter paths         # some of them
    python tools/mutation.py paths --keep         # keep the scratch copy (then `mutmut show NAME` there)

"Killed" counts mutants a test failed on, and those that made a test time out or crash (mutmut's "timeout" and
"segfault"; the tests run in mutmut's fork-server mode, so a crash is the mutant's, not a fork of a process that
had run torch); "survived" are mutants every selected test passed with; "no tests" are mutants in functions none
of the selected tests reach (they count as survivors in the share: untested code is not guarded).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# module (under src/rotoscope) -> the test files that are its tests
MODULES = {
    "filter": ("filter.py", ["tests/test_filter.py", "tests/test_card.py", "tests/hostile/test_hostile_filters.py"]),
    "images": ("images.py", ["tests/test_images.py", "tests/hostile/test_hostile_images.py"]),
    "data": ("data.py", ["tests/test_data.py"]),
    "paths": ("paths.py", ["tests/test_pitfalls.py", "tests/test_paths.py",
                           "tests/hostile/test_hostile_filesystem.py"]),
    "uploads": ("server/uploads.py", ["tests/test_server_app.py", "tests/hostile/test_hostile_server.py"]),
}
KILLED = ("killed", "timeout", "segfault")


def scratch_copy(module: str, tests: list[str]) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix=f"rotoscope-mutation-{module}-"))
    shutil.copytree(ROOT / "src", tmp / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (tmp / "tests" / "hostile").mkdir(parents=True)
    for f in ("tests/conftest.py", "tests/hostile/conftest.py", "tests/hostile/__init__.py"):
        shutil.copy(ROOT / f, tmp / f)
    present = [t for t in tests if (ROOT / t).exists()]
    for t in present:
        shutil.copy(ROOT / t, tmp / t)
    mutate, _ = MODULES[module]
    (tmp / "setup.cfg").write_text(
        "[mutmut]\n"
        "source_paths=src\n"
        f"only_mutate=src/rotoscope/{mutate}\n"
        "pytest_add_cli_args_test_selection=\n" + "".join(f"    {t}\n" for t in present)
        + "also_copy=\n    tests\n"
        # the CLI and the tests use one thread (tests/conftest.py); timeouts as the suite's
        "pytest_add_cli_args=\n    -p\n    no:cacheprovider\n    -q\n    -x\n"
        # each mutant's tests in a child of a fork server that has imported pytest but run nothing: forked from
        # mutmut's own process (the default), which has run the suite with torch and threads, a child could crash
        # (SIGSEGV/SIGABRT) in a later test, and mutmut counted a mutant every test passed with as "segfault"
        # (measured on server/uploads.py: 24 of 205, the 6 equivalent ones among them)
        "process_isolation=forkserver\n")
    (tmp / "pytest.ini").write_text("[pytest]\ntestpaths = tests\n")
    # mutmut writes the mutated package to mutants/src, which the tests must import instead of the installed
    # (editable) rotoscope: it is first on PYTHONPATH, and made now, so the interpreter does not note it as missing
    (tmp / "mutants" / "src").mkdir(parents=True)
    return tmp


def run(module: str, keep: bool, max_children: int) -> dict:
    mutate, tests = MODULES[module]
    tmp = scratch_copy(module, tests)
    env = {**os.environ, "ROTOSCOPE_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(tmp / "mutants" / "src")}
    t0 = time.time()
    cmd = [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children)]
    p = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
    results = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=tmp, env=env,
                             capture_output=True, text=True)
    counts: dict[str, int] = {}
    survivors: list[str] = []
    for line in results.stdout.splitlines():
        m = re.match(r"\s*(\S+): (.+)$", line)
        if m:
            status = m.group(2).strip()
            counts[status] = counts.get(status, 0) + 1
            if status in ("survived", "no tests"):
                survivors.append(f"{m.group(1)} ({status})")
    total = sum(counts.values())
    killed = sum(counts.get(k, 0) for k in KILLED)
    out = {"module": module, "file": f"src/rotoscope/{mutate}", "tests": [t for t in tests if (ROOT / t).exists()],
           "total": total, "killed": killed, "counts": counts, "survivors": survivors,
           "minutes": (time.time() - t0) / 60, "scratch": str(tmp), "rc": p.returncode,
           "log": (p.stdout + p.stderr)[-3000:]}
    if not keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("modules", nargs="*", default=list(MODULES), help=f"any of {', '.join(MODULES)}")
    ap.add_argument("--keep", action="store_true", help="keep the scratch copies (to `mutmut show` survivors)")
    ap.add_argument("--max-children", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    ap.add_argument("--survivors", action="store_true", help="list every surviving mutant")
    args = ap.parse_args()
    rows = []
    for m in args.modules:
        if m not in MODULES:
            ap.error(f"unknown module {m}: use {', '.join(MODULES)}")
        r = run(m, args.keep, args.max_children)
        rows.append(r)
        print(f"{m}: {r['killed']}/{r['total']} killed ({r['counts']}) in {r['minutes']:.1f} min", flush=True)
        if r["total"] == 0 or r["counts"].get("not checked"):
            print(f"  mutmut did not check every mutant (exit code {r['rc']}):\n{r['log']}", flush=True)
        if args.survivors or args.keep:
            for s in r["survivors"]:
                print("  survived:", s)
        if args.keep:
            print("  scratch copy:", r["scratch"])
    print("\n| module | tests | mutants | killed | share killed | survived | no tests | minutes |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        share = r["killed"] / r["total"] if r["total"] else float("nan")
        print(f"| {r['file']} | {', '.join(Path(t).name for t in r['tests'])} | {r['total']} | {r['killed']} | "
              f"{share:.0%} | {r['counts'].get('survived', 0)} | {r['counts'].get('no tests', 0)} | "
              f"{r['minutes']:.1f} |")
    return 0 if all(r["total"] and not r["counts"].get("not checked") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
