"""glibc's allocator tuned for tensors (pipeline.common.allocator): `python -m pipeline.<command>`
restarts once with the thresholds raised, keeps a user's own, and leaves other C libraries alone."""

import subprocess
import sys

import pytest

from pipeline.common import allocator

PRINT_TUNABLES = "import os; print(os.environ.get('GLIBC_TUNABLES', '(none)'))"


def test_the_thresholds_are_added_to_the_users_other_tunables_and_never_twice():
    assert allocator.tuned({}, "glibc 2.36") == {"GLIBC_TUNABLES": allocator.TUNABLES}
    assert allocator.tuned({"GLIBC_TUNABLES": "glibc.cpu.x86_shstk=off", "HOME": "/h"}, "glibc 2.36") == {
        "GLIBC_TUNABLES": f"glibc.cpu.x86_shstk=off:{allocator.TUNABLES}",
        "HOME": "/h",
    }
    assert allocator.tuned({"GLIBC_TUNABLES": allocator.TUNABLES}, "glibc 2.36") is None  # after the restart: no loop
    assert (
        allocator.tuned({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072"}, "glibc 2.36") is None
    )  # the user's own
    assert allocator.tuned({}, "") is None  # macOS, musl


@pytest.mark.skipif(not allocator.libc().startswith("glibc"), reason="glibc's tunables only")
def test_a_command_restarts_once_with_the_tunables_and_an_import_never_restarts(tmp_path):
    # what `python -m pipeline.<command>` looks like while the package is imported: argv[0] is "-m";
    # the restart runs the original command line again, here a line that prints the environment
    as_command = (
        f"import sys; sys.argv[0] = '-m'; sys.orig_argv = [sys.executable, '-c', {PRINT_TUNABLES!r}]; import pipeline"
    )
    env = {"PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", as_command], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60
    )
    assert done.returncode == 0 and done.stdout.strip() == allocator.TUNABLES, done.stderr
    imported = subprocess.run(
        [sys.executable, "-c", f"import pipeline; {PRINT_TUNABLES}"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert imported.stdout.strip() == "(none)"  # `import pipeline` from Python changes nothing
