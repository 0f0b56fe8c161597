"""The `intrinsic` command line (installed as `intrinsic.cli`)."""
