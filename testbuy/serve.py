"""`testbuy serve` (``make serve``): the local stack a user keeps up and drives with the CLI or curl.

Unless told otherwise it runs the simulated marketplace (takes the orders, delivers them with signed Standard
Webhooks to the API; any seller id is accepted and behaves as drawn from (seed, seller id)) and the simulated labs
(post custody, service quality and verdicts for their queues), so a programme started by hand runs to its verdicts.
``--no-labs`` leaves the verdicts to the user, ``--no-marketplace`` / ``--marketplace-url`` replace the marketplace.
Everything it prints is plain lines (a script may read them): where the secrets are, the API URL, how to get a
token, how to sign a delivery.
"""

from __future__ import annotations

import json
import shlex
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from testbuy.localstack import LocalStack, StackInfo
from testbuy.sim.runner import DEFAULT_LABS, SimOptions, Simulators

UNSET_MARKETPLACE = "http://127.0.0.1:9/unset"


@dataclass(frozen=True)
class ServeOptions:
    labs: bool = True
    lab_ids: tuple[str, ...] = DEFAULT_LABS
    marketplace: bool = True
    marketplace_url: str | None = None  # a real marketplace: the simulated one stays off
    seed: int = 42
    sellers: int = 500  # the simulated world written to the sellers file, ready to import
    isolated: bool = True
    workdir: Path | None = None  # where the state file goes (default: .testbuy at the repository root)

    def __post_init__(self) -> None:
        if self.marketplace_url is not None and not self.marketplace_url.startswith(("http://", "https://")):
            raise ValueError("--marketplace-url must be an http:// or https:// URL")
        if self.labs and not self.lab_ids:
            raise ValueError("--lab needs at least one lab id (or use --no-labs)")

    @property
    def simulate_marketplace(self) -> bool:
        return self.marketplace and self.marketplace_url is None


def simulators(opts: ServeOptions) -> Simulators:
    return Simulators(
        SimOptions(
            seed=opts.seed,
            sellers=opts.sellers,
            marketplace=opts.simulate_marketplace,
            labs=opts.lab_ids if opts.labs else (),
            accept_unknown_sellers=True,
        )
    )


def marketplace_url(opts: ServeOptions, sims: Simulators) -> str:
    """What the order workflow calls: the simulator, the given URL, or a placeholder that refuses connections."""
    return opts.marketplace_url or sims.marketplace_url or UNSET_MARKETPLACE


def write_sellers(sims: Simulators, path: Path) -> Path:
    """The simulated world's sellers as an import payload (JSON lines), ready for ``POST /programs/{id}/sellers``."""
    assert sims.world is not None  # nosec B101 # set by Simulators
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in sims.world.import_payload()))
    return path


def banner(opts: ServeOptions, info: StackInfo, state_file: Path, market: str, sellers_file: Path | None) -> list[str]:
    """The lines `serve` prints: plain, one fact a line, nothing a terminal width can cut."""
    lines = [
        "testbuy local stack is up (Ctrl-C to stop).",
        f"API URL: {info.api_url}",
        f"AWS endpoint URL: {info.endpoint_url}",
        f"Event bus: {info.bus_name}",
        f"State file (API URL, token secret, webhook secret; mode 0600): {state_file.resolve()}",
        "Get a token: testbuy token --role program_manager   (run it in this directory)",
        f"  export TESTBUY_API_URL={info.api_url}",
        '  export TESTBUY_TOKEN="$(testbuy token --role program_manager)"',
    ]
    if opts.simulate_marketplace:
        lines.append(f"Marketplace: simulated at {market}: it accepts any seller id and delivers with signed webhooks.")
        if sellers_file is not None:
            lines.append(f"Simulated sellers, ready to import (JSON lines): {sellers_file.resolve()}")
    elif opts.marketplace_url:
        lines.append(f"Marketplace: {market} (not simulated: it must send the delivery webhooks itself).")
    else:
        lines.append("Marketplace: none (--no-marketplace): orders cannot be placed; deliveries are yours to post.")
    if opts.labs:
        lines.append(f"Labs: simulated {', '.join(opts.lab_ids)}; they post verdicts for programmes naming these labs.")
    else:
        lines.append("Labs: none (--no-labs): post verdicts yourself with a lab token (--role lab --lab-id LAB).")
    lines += [
        "Webhook secret: the 'webhook_secret' field of the state file (Standard Webhooks, whsec_<base64>).",
        f"Sign a delivery (Standard Webhooks): POST {info.api_url}/webhooks/delivery with the headers",
        "  webhook-id: a unique message id, e.g. msg_<marketplace order id>_delivered",
        "  webhook-timestamp: the Unix time in seconds",
        "  webhook-signature: v1,<base64 HMAC-SHA256 over '<id>.<timestamp>.<raw body>' with the key",
        "  base64-decoded from the secret after 'whsec_'.",
        "  In a shell (body in body.json):",
        "  SECRET=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))[\"webhook_secret\"])' "
        + shlex.quote(str(state_file.resolve()))
        + ")",
        "  ID=msg_$(date +%s%N); TS=$(date +%s)",
        "  KEY=$(printf %s \"${SECRET#whsec_}\" | base64 -d | od -An -v -tx1 | tr -d ' \\n')",
        '  SIG=$( (printf %s "$ID.$TS."; cat body.json) | openssl dgst -sha256 -mac HMAC -macopt hexkey:$KEY -binary'
        " | base64)",
        f'  curl -X POST {info.api_url}/webhooks/delivery -H "webhook-id: $ID" -H "webhook-timestamp: $TS"'
        ' -H "webhook-signature: v1,$SIG" -H "Content-Type: application/json" --data-binary @body.json',
        '  body.json: {"order_id": "...", "marketplace_order_id": "...", "status": "delivered", '
        '"occurred_at": "2026-11-29T12:00:00+00:00"}',
    ]
    return lines


def run_serve(opts: ServeOptions, out: IO[str] | None = None, stop: threading.Event | None = None) -> None:
    """Start the stack and the simulators, print the banner, block until ``stop`` is set (or Ctrl-C)."""
    out = out or sys.stdout
    sims = simulators(opts)
    market = marketplace_url(opts, sims)
    with LocalStack(marketplace_url=market, isolated=opts.isolated, workdir=opts.workdir) as stack:
        info = stack.info
        assert info is not None  # nosec B101 # set by start()
        sims.start(info)
        try:
            sellers_file = (
                write_sellers(sims, stack.workdir / "sim-sellers.jsonl") if opts.simulate_marketplace else None
            )
            for line in banner(opts, info, stack.state_file, market, sellers_file):
                print(line, file=out, flush=True)
            waiter = stop or threading.Event()
            try:
                while not waiter.wait(3600):
                    pass
            except KeyboardInterrupt:
                print("stopping", file=out, flush=True)
        finally:
            sims.stop()
