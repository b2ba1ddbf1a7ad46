"""The AWS half of the local stack in its own process: moto server + Step Functions executor + the Lambda bridge.

``LocalStack(isolated=True)`` starts this module as a child process so that the Lambda handlers (run by the bridge,
inside moto) and the HTTP API (in the parent) use both cores instead of sharing one GIL. The child's environment
carries every variable the handlers read; it prints ``ready`` once moto answers, and on SIGTERM writes the bridge's
invocation statistics to ``--stats`` and exits.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from types import FrameType


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--stage", required=True)
    parser.add_argument("--stats", type=Path, required=True)
    args = parser.parse_args(argv)

    from moto.server import ThreadedMotoServer

    from testbuy import moto_fidelity, sfn_events
    from testbuy.bridge import Bridge, chalice_handlers
    from testbuy.localstack import configure_moto, load_app, quiet_werkzeug

    quiet_werkzeug()
    moto_fidelity.install()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=args.port, verbose=False)
    server.start()
    configure_moto(f"http://127.0.0.1:{args.port}")
    app_module = load_app()
    bridge = Bridge(chalice_handlers(app_module.app), prefix=f"testbuy-{args.stage}-")
    bridge.install()
    sfn_events.install(app_module.execution_safety_net)
    done = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("ready", flush=True)
    done.wait()
    args.stats.write_text(
        json.dumps(
            {
                "invocations": bridge.invocations,
                "errors": bridge.errors,
                "seconds": bridge.seconds,
                "calls": bridge.calls,
            }
        )
    )
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
