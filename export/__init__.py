"""Deployment recipes (trtexec protocol script, Triton template), shipped in the wheel."""
