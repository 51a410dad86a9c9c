"""The ops surface: Grafana dashboard, Prometheus alerts and Kubernetes manifests, generated from code.

``kdgate ops generate`` writes every generated file (``dashboards/kdgate.json``, the
dashboard ConfigMap, the PrometheusRule and the RayService ``serveConfigV2`` patches under
``k8s/``); ``kdgate ops generate --check`` fails when one is stale (a test runs it).
"""
