"""The rollout controller (the control loop), apart from the request path.

It reads the observations the request path publishes (window snapshots, or Prometheus)
and writes the split through one port; the request path (``gateway/``) never imports it.

- ``core/``: pure decisions, no Ray, HTTP or metrics libraries: ``spec`` (the policy
  document), ``observations`` (windows and sources), ``drift`` (statistics), ``gates``
  (analysis gates), ``machine`` (the state machine: state + observations -> actions).
- adapters: ``reconciler`` (applies the machine's actions, one tick at a time), ``store``
  (SQLite status/history, evidence bundles), ``prometheus_source`` (observations from
  Prometheus's HTTP API), ``cli`` (``kdgate rollout ...`` over the admin API).
"""
