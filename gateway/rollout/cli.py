"""`kdgate rollout status|promote|pause|resume|abort|set-weight`: the admin API from a shell.

Every command calls the running gateway's admin API (``/admin/rollout``) with the bearer
token, so it is audited there like any other admin action (actor ``admin-api``). The token
comes from ``--token-file`` (e.g. a mounted Kubernetes Secret) or the environment variable
named by ``--token-env`` (``KDGATE_ADMIN_TOKEN`` by default); it is never printed.

Example:
    $ export KDGATE_ADMIN_TOKEN=...
    $ kdgate rollout status --url http://127.0.0.1:8000
    $ kdgate rollout set-weight 25
    $ kdgate rollout pause
"""
from __future__ import annotations

import json
import os
import pathlib
from typing import Optional

import typer

EXIT_FAILED = 1

rollout_app = typer.Typer(help="Inspect and steer the gateway's rollout (admin API, token required).",
                          no_args_is_help=True)

URL_OPTION = typer.Option("http://127.0.0.1:8000", "--url", envvar="KDGATE_URL", help="The gateway's base URL.")
TOKEN_ENV_OPTION = typer.Option("KDGATE_ADMIN_TOKEN", "--token-env", help="Env var that holds the admin token.")
TOKEN_FILE_OPTION = typer.Option(None, "--token-file", help="File that holds the admin token (wins over the env var).")


def admin_token(token_env: str, token_file: Optional[pathlib.Path]) -> str:
    """The admin token from ``token_file`` or ``$token_env``; a clear error when neither has one."""
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as err:
            raise typer.BadParameter(f"cannot read the token file {token_file}: {err.strerror}") from err
    else:
        token = os.environ.get(token_env, "").strip()
    if not token:
        where = str(token_file) if token_file is not None else f"${token_env}"
        raise typer.BadParameter(f"no admin token in {where}")
    return token


def call_admin(url: str, token: str, method: str, path: str, body: dict | None = None) -> dict:
    """One admin API call; exits with the gateway's own error message when it refuses."""
    import httpx

    try:
        response = httpx.request(method, url.rstrip("/") + path, json=body, timeout=10.0,
                                 headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as err:
        typer.echo(f"kdgate rollout: cannot reach {url}: {err}", err=True)
        raise typer.Exit(EXIT_FAILED) from err
    try:
        payload = response.json()
    except ValueError:
        payload = {"error": response.text[:200]}
    if response.status_code >= 400:
        message = payload.get("error", payload) if isinstance(payload, dict) else payload
        typer.echo(f"kdgate rollout: HTTP {response.status_code}: {message}", err=True)
        raise typer.Exit(EXIT_FAILED)
    return payload


def _command(name: str, url: str, token_env: str, token_file: Optional[pathlib.Path],
             weight: float | None = None) -> None:
    token = admin_token(token_env, token_file)
    body = {"weight": weight} if weight is not None else None
    typer.echo(json.dumps(call_admin(url, token, "POST", f"/admin/rollout/{name}", body), indent=2))


def _split_text(split: dict[str, float]) -> str:
    return ", ".join(f"{name} {weight:g} %" for name, weight in split.items()) or "-"


def format_status(history: dict, checks: int = 5) -> str:
    """Roles, phase, split and the last ``checks`` analysis checks of ``GET /admin/rollout``, as text."""
    from gateway.rollout.store import format_timeline  # noqa: PLC0415 -- keeps `kdgate --help` fast

    st = history["status"]
    lines = [
        f"phase      {st['phase']}" + (f" (from {st['paused_from']})" if st.get("paused_from") else ""),
        f"candidate  {st['student']} (version {st.get('student_version') or '-'}) at {st['weight']:g} %",
        f"stable     {st.get('stable') or st['teacher']}"
        + (f" (replaced {st['previous_stable']})" if st.get("previous_stable") else ""),
        f"reference  {st['teacher']}",
        f"split      {_split_text(history.get('split', {}))}",
        f"in force   {_split_text(history.get('split_in_force', {}))}",
        f"reason     {st.get('reason', '')}",
    ]
    if st.get("last_error"):
        lines.append(f"error      {st['last_error']}")
    recent = history.get("checks", [])[-checks:]
    lines += ["", f"last {len(recent)} checks:", format_timeline(recent)]
    return "\n".join(lines)


@rollout_app.command("status")
def status(url: str = URL_OPTION, token_env: str = TOKEN_ENV_OPTION,
           token_file: Optional[pathlib.Path] = TOKEN_FILE_OPTION,
           as_json: bool = typer.Option(False, "--json", help="Print the admin API's whole answer as JSON."),
           checks: int = typer.Option(5, "--checks", min=0, help="How many recent checks to list.")) -> None:
    """Phase (incl. Guarding), candidate, stable, reference, the split and the last checks."""
    token = admin_token(token_env, token_file)
    history = call_admin(url, token, "GET", "/admin/rollout")
    typer.echo(json.dumps(history, indent=2) if as_json else format_status(history, checks))


def _simple(name: str, summary: str):
    def command(url: str = URL_OPTION, token_env: str = TOKEN_ENV_OPTION,
                token_file: Optional[pathlib.Path] = TOKEN_FILE_OPTION) -> None:
        _command(name, url, token_env, token_file)

    command.__doc__ = summary
    rollout_app.command(name)(command)


_simple("promote", "Skip the remaining steps: the student takes 100 %.")
_simple("pause", "Hold the current weight; analysis stops advancing the rollout.")
_simple("resume", "Continue a paused rollout from its current step.")
_simple("abort", "Stop the rollout: the student goes to 0 % and stays there.")


@rollout_app.command("set-weight")
def set_weight(weight: float = typer.Argument(..., min=0.0, max=100.0, help="Student share, percent."),
               url: str = URL_OPTION, token_env: str = TOKEN_ENV_OPTION,
               token_file: Optional[pathlib.Path] = TOKEN_FILE_OPTION) -> None:
    """Set the student's live share by hand (the rollout pauses there)."""
    _command("set_weight", url, token_env, token_file, weight=weight)
