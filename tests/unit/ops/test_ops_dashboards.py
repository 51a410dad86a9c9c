"""The Grafana dashboard: generated JSON up to date, the panels the issue asks for, `kdgate dashboards push`.

No Grafana server can run here, so `push` is checked against a loopback HTTP endpoint that
answers like Grafana's ``POST /api/dashboards/db`` and records what grafana-client sent.
"""
from __future__ import annotations

import http.server
import json
import pathlib
import threading

import pytest
from typer.testing import CliRunner

from kdgate.cli import app
from kdgate.ops.dashboards import PANELS, build_dashboard, fill_variables, panel_queries

ROOT = pathlib.Path(__file__).resolve().parents[3]


def test_the_checked_in_dashboard_is_the_generated_one():
    assert json.loads((ROOT / "dashboards" / "kdgate.json").read_text()) == build_dashboard()


def test_the_dashboard_has_every_panel_ops_watch():
    titles = " | ".join(p.title for p in PANELS).lower()
    for topic in ("p50 / p99", "request rate", "error", "traffic weight", "agreement", "kl", "cost per inference",
                  "monthly cost", "rollout phase", "rollbacks", "shadow drops", "fallbacks", "batch size"):
        assert topic in titles, topic
    dashboard = build_dashboard()
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)) == len(PANELS)
    assert all(t["expr"] and t["refId"] for p in dashboard["panels"] for t in p["targets"])


def test_variables_are_filled_and_a_missing_one_is_an_error():
    queries = list(panel_queries({"model": "mnist1d", "__rate_interval": "1m"}))
    assert queries and not any("$" in expr for _, _, expr in queries)
    assert any('model=~"mnist1d"' in expr and "[1m]" in expr for _, _, expr in queries)
    with pytest.raises(KeyError):
        fill_variables('x{model=~"$model"}', {})


class _FakeGrafana(http.server.BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 -- http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.received.append({"path": self.path, "auth": self.headers.get("authorization"), "body": body})
        status = 200 if self.headers.get("authorization") == "Bearer good-token" else 401
        answer = {"uid": body["dashboard"]["uid"], "version": 3, "url": "/d/kdgate/x", "status": "success"}
        payload = json.dumps(answer if status == 200 else {"message": "invalid API key"}).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *_args):
        pass


@pytest.fixture
def fake_grafana():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeGrafana)
    _FakeGrafana.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _FakeGrafana.received
    server.shutdown()


def test_push_uploads_the_dashboard_with_the_token_from_env(fake_grafana, monkeypatch):
    url, received = fake_grafana
    monkeypatch.setenv("GRAFANA_TOKEN", "good-token")
    result = CliRunner().invoke(app, ["dashboards", "push", "--url", url, "--folder-uid", "ml"])
    assert result.exit_code == 0, result.output
    assert "pushed dashboard kdgate version 3" in result.output and "good-token" not in result.output
    (call,) = received
    assert call["path"] == "/api/dashboards/db" and call["auth"] == "Bearer good-token"
    assert call["body"]["dashboard"] == build_dashboard()
    assert call["body"]["overwrite"] is True and call["body"]["folderUid"] == "ml"


def test_push_explains_a_missing_or_refused_token(fake_grafana, monkeypatch):
    url, _ = fake_grafana
    monkeypatch.delenv("GRAFANA_TOKEN", raising=False)
    missing = CliRunner().invoke(app, ["dashboards", "push", "--url", url])
    assert missing.exit_code == 1 and "no Grafana token in $GRAFANA_TOKEN" in missing.output
    monkeypatch.setenv("MY_TOKEN", "bad-token")
    refused = CliRunner().invoke(app, ["dashboards", "push", "--url", url, "--token-env", "MY_TOKEN"])
    assert refused.exit_code == 1 and "refused or failed" in refused.output and "bad-token" not in refused.output


def test_ops_generate_check_passes_on_the_repository():
    result = CliRunner().invoke(app, ["ops", "generate", "--check", "--root", str(ROOT)])
    assert result.exit_code == 0, result.output
    assert "up to date" in result.output


def test_ops_generate_writes_then_reports_stale_files(tmp_path):
    (tmp_path / "deployments").mkdir()
    (tmp_path / "deployments" / "canary-5.yaml").write_text((ROOT / "deployments" / "canary-5.yaml").read_text())
    stale = CliRunner().invoke(app, ["ops", "generate", "--check", "--root", str(tmp_path)])
    assert stale.exit_code == 1 and "dashboards/kdgate.json" in stale.output
    written = CliRunner().invoke(app, ["ops", "generate", "--root", str(tmp_path)])
    assert written.exit_code == 0 and "k8s/overlays/gpu/serve-config.yaml" in written.output
    (tmp_path / "k8s" / "base" / "prometheusrule.yaml").write_text("edited by hand\n")
    again = CliRunner().invoke(app, ["ops", "generate", "--check", "--root", str(tmp_path)])
    assert again.exit_code == 1 and "k8s/base/prometheusrule.yaml" in again.output
