"""The network fence: the OCI hook that loads it into a drone (hook.py) and its rules (rules.py)."""
