"""The model API keys' stand-in upstream in the machine (tests/fakeupstream.py: TLS on loopback with its
own test CA, checks the key header, streams server-sent events), shared by the tests of the key proxy,
the fence and the audit. Its keys reach the machine on stdin, never on a command line."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.e2e.helpers import PLAIN_CONFIG, wait_for, write_config

KEY = "sk-ant-e2e-" + secrets.token_hex(16)
OPENAI_KEY = "sk-openai-e2e-" + secrets.token_hex(16)
PROXY = "http://127.0.0.3:9119"  # the key proxy's address in every drone
FAKE_UPSTREAM = Path(__file__).resolve().parents[1] / "fakeupstream.py"


@contextmanager
def key_upstream(machine: Any, base_config: str = PLAIN_CONFIG) -> Iterator[str]:
    """Start the upstream and write BASE_CONFIG with [keys.anthropic] and [keys.openai] pointing at it;
    yields its port. BASE_CONFIG is written back, and the upstream stopped, afterwards."""
    machine.user("rm -rf ~/keyhost && mkdir -p -m 700 ~/keyhost/state")
    machine.user("cat > ~/keyhost/fakeupstream.py", input=FAKE_UPSTREAM.read_text())
    machine.user("umask 077 && cat > ~/keyhost/anthropic.key", input=KEY + "\n")
    machine.user("umask 077 && cat > ~/keyhost/openai.key", input=OPENAI_KEY + "\n")
    machine.user(
        "cd ~/keyhost; nohup /opt/devbox-venv/bin/python fakeupstream.py state x-api-key anthropic.key"
        " > log 2>&1 < /dev/null & echo $! > pid"
    )
    try:
        wait_for(lambda: machine.user("test -s ~/keyhost/state/port", check=False).returncode == 0, 60, "the upstream")
        port = machine.user("cat ~/keyhost/state/port").stdout.strip()
        write_config(
            machine,
            base_config + f'\n[keys.anthropic]\nsecret = "file:/home/dev/keyhost/anthropic.key"\n'
            f'upstream = "https://127.0.0.1:{port}/base"\nca_file = "/home/dev/keyhost/state/ca.pem"\n'
            f'\n[keys.openai]\nsecret = "file:/home/dev/keyhost/openai.key"\n'
            f'upstream = "https://127.0.0.1:{port}"\nca_file = "/home/dev/keyhost/state/ca.pem"\n',
        )
        yield port
    finally:
        machine.user("kill $(cat ~/keyhost/pid)", check=False)
        write_config(machine, base_config)
