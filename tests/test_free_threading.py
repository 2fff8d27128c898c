"""ferroloop on a free-threaded CPython (3.13t, 3.14t).

The native core relies on the GIL (state borrowed per call, handles recycled by
reference count), so the module declares that it uses the GIL: importing it on a
free-threaded build re-enables the GIL, as CPython does for every extension module
that does not declare itself free-threading safe.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig

import pytest


@pytest.mark.ferroloop_only
@pytest.mark.skipif(
    not hasattr(sys, "_is_gil_enabled") or not sysconfig.get_config_var("Py_GIL_DISABLED"),
    reason="not a free-threaded build",
)
def test_importing_ferroloop_keeps_the_gil_on():
    code = "import sys, ferroloop; print(sys._is_gil_enabled())"
    # PYTHON_GIL unset: the interpreter decides from the modules it imports.
    env = {k: v for k, v in os.environ.items() if k != "PYTHON_GIL"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert (done.returncode, done.stdout.strip()) == (0, "True"), done.stderr
