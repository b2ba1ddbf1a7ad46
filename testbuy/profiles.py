"""Where the CLI finds its API and token: flag > environment > profile file > a running local stack.

- Environment: ``TESTBUY_API_URL``, ``TESTBUY_TOKEN``, ``TESTBUY_PROFILE``, ``TESTBUY_LAB_ID``, ``TESTBUY_EVENT_BUS``,
  ``TESTBUY_AWS_ENDPOINT_URL``.
- Profile file: ``$TESTBUY_CONFIG``, else ``$XDG_CONFIG_HOME/testbuy/profiles.toml`` (``~/.config/testbuy/...``): one
  TOML table per profile with ``api_url``, ``token``, ``lab_id``, ``event_bus``, ``aws_endpoint_url`` (all optional).
  The profile is ``--profile``, else ``$TESTBUY_PROFILE``, else ``default`` when the file has one.
- Local stack: a running ``testbuy serve`` publishes its state (API URL, AWS endpoint, bus, token secret) in a per-user
  runtime file, ``$TESTBUY_RUNTIME_DIR`` else ``$XDG_RUNTIME_DIR/testbuy`` else ``~/.local/state/testbuy``, named
  ``stack-<stage>.json`` (mode 0600), and in ``.testbuy/local.json`` of the project it runs from (the fallback).
  A state file whose process is gone is ignored, so a stale file never hands out a dead URL. With no token
  configured, the CLI mints a dev token of the role the command needs, for that local stack only.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROFILE_KEYS = ("api_url", "token", "lab_id", "event_bus", "aws_endpoint_url")


class ConfigError(ValueError):
    """The configuration cannot be used as given (the message says what to fix)."""


def runtime_dir() -> Path:
    given = os.environ.get("TESTBUY_RUNTIME_DIR")
    if given:
        return Path(given)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "testbuy"
    return Path.home() / ".local" / "state" / "testbuy"


def runtime_state_path(stage: str) -> Path:
    return runtime_dir() / f"stack-{stage}.json"


def publish_state(stage: str, state: dict[str, Any]) -> Path | None:
    """Write a running stack's state to the per-user runtime file (0600, directory 0700). Best effort: a stack that
    cannot write it still runs, and ``testbuy token`` then falls back to the project's ``.testbuy/local.json``."""
    path = runtime_state_path(stage)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({**state, "stage": stage}, fh, indent=2)
        tmp.replace(path)
    except OSError:
        return None
    return path


def withdraw_state(stage: str, pid: int | None = None) -> None:
    """Remove the runtime file when it is this process's (a newer stack of the same stage keeps its own)."""
    path = runtime_state_path(stage)
    try:
        if json.loads(path.read_text()).get("pid") == (os.getpid() if pid is None else pid):
            path.unlink()
    except (OSError, ValueError):
        return


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def project_state_paths() -> list[Path]:
    from testbuy.infra import ROOT

    paths = [ROOT / ".testbuy" / "local.json", Path.cwd() / ".testbuy" / "local.json"]
    return list(dict.fromkeys(p.resolve() for p in paths))


def find_local_stack(stage: str = "local") -> dict[str, Any] | None:
    """The state of a running local stack: the runtime file of ``stage`` first, then the project's file; None when
    none is found or its process is gone."""
    for path in [runtime_state_path(stage), *project_state_paths()]:
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(state, dict) and state.get("api_url") and state.get("token_secret") and _alive(state.get("pid")):
            return {**state, "state_file": str(path)}
    return None


def config_path() -> Path:
    given = os.environ.get("TESTBUY_CONFIG")
    if given:
        return Path(given)
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg) if xdg else Path.home() / ".config"
    return base / "testbuy" / "profiles.toml"


def load_profile(name: str | None) -> dict[str, str]:
    """The named profile (``--profile``, ``$TESTBUY_PROFILE``, or ``default`` if present); {} when none applies."""
    chosen = name or os.environ.get("TESTBUY_PROFILE")
    path = config_path()
    if not path.exists():
        if chosen:
            raise ConfigError(f"profile {chosen!r} asked for, but there is no profile file at {path}")
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read the profile file {path}: {exc}") from None
    key = chosen or "default"
    profile = data.get(key)
    if profile is None:
        if chosen:
            known = ", ".join(sorted(k for k, v in data.items() if isinstance(v, dict))) or "none"
            raise ConfigError(f"no profile {chosen!r} in {path} (profiles: {known})")
        return {}
    if not isinstance(profile, dict):
        raise ConfigError(f"profile {key!r} in {path} must be a table")
    unknown = sorted(set(profile) - set(PROFILE_KEYS))
    if unknown:
        raise ConfigError(f"profile {key!r} in {path}: unknown keys {unknown}; allowed: {list(PROFILE_KEYS)}")
    bad = [k for k, v in profile.items() if not isinstance(v, str)]
    if bad:
        raise ConfigError(f"profile {key!r} in {path}: {bad} must be strings")
    return {str(k): str(v) for k, v in profile.items()}


@dataclass(frozen=True)
class Settings:
    """The resolved configuration of one command, with where each value came from."""

    api_url: str
    token: str | None
    api_url_from: str
    token_from: str
    lab_id: str | None = None
    event_bus: str | None = None
    aws_endpoint_url: str | None = None
    local: dict[str, Any] | None = None


def resolve(
    *,
    api_url: str | None,
    token: str | None,
    profile: str | None,
    role: str | None,
    lab_id: str | None = None,
    stage: str = "local",
) -> Settings:
    """Apply the precedence flag > environment > profile > local stack to the API URL, the token and the rest."""
    prof = load_profile(profile)
    env = os.environ

    def pick(flag: str | None, env_name: str, key: str) -> tuple[str | None, str]:
        if flag:
            return flag, "flag"
        if env.get(env_name):
            return env[env_name], f"${env_name}"
        if prof.get(key):
            return prof[key], "profile"
        return None, ""

    url, url_from = pick(api_url, "TESTBUY_API_URL", "api_url")
    tok, tok_from = pick(token, "TESTBUY_TOKEN", "token")
    lab, _ = pick(lab_id, "TESTBUY_LAB_ID", "lab_id")
    bus, _ = pick(None, "TESTBUY_EVENT_BUS", "event_bus")
    endpoint, _ = pick(None, "TESTBUY_AWS_ENDPOINT_URL", "aws_endpoint_url")
    local = find_local_stack(stage) if (url is None or tok is None or bus is None) else None
    if url is None:
        if local is None:
            raise ConfigError(
                "no API configured: pass --api-url, set TESTBUY_API_URL, add a profile "
                f"({config_path()}), or start a local stack with `make serve`"
            )
        url, url_from = str(local["api_url"]), f"local stack ({local['state_file']})"
    url = url.rstrip("/")
    is_local = local is not None and str(local["api_url"]).rstrip("/") == url
    if tok is None and is_local and role is not None and local is not None:
        from chalicelib.api.auth import Role, issue_token

        r = Role(role)
        if r is Role.LAB and not lab:
            raise ConfigError("a lab command needs --lab-id (or TESTBUY_LAB_ID)")
        tok, tok_from = (
            issue_token(str(local["token_secret"]), r, f"cli-{r.value}", lab if r is Role.LAB else None),
            ("minted for the local stack"),
        )
    if is_local and local is not None:
        bus = bus or local.get("bus_name")
        endpoint = endpoint or local.get("endpoint_url")
    return Settings(
        api_url=url,
        token=tok,
        api_url_from=url_from,
        token_from=tok_from or "none",
        lab_id=lab,
        event_bus=bus,
        aws_endpoint_url=endpoint,
        local=local if is_local else None,
    )
