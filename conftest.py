"""Test-session setup shared by the unit tests and nbval's notebook runs.

The suite always runs in the ``smoke`` profile, and with a private, empty cache
folder. Both are set here, before any kernel starts, so notebook kernels inherit
them; ``tests/test_test_mode.py`` asserts that they really took effect.
"""

import os
import tempfile

os.environ["DAGM_PROFILE"] = "smoke"
os.environ["DAGM_HOME"] = tempfile.mkdtemp(prefix="dagm-test-home-")
os.environ["DAGM_EXPECT_PROFILE"] = "smoke"  # setup_notebook() and every notebook assert it
os.environ["DAGM_RUNS"] = tempfile.mkdtemp(prefix="dagm-test-runs-")  # notebook 05 reuses 03/04 runs
os.environ.pop("DAGM_DIR", None)  # tests use the built-in generator unless a test says otherwise
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")
