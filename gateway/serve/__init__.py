"""Everything that imports Ray: the Serve application and its deployments, metrics, local Ray.

``app`` (``build_app``: the application builder for ``serve run``/``serve deploy``),
``ingress`` (the ``Gateway`` deployment: dispatch and wiring), ``model`` (one remote
variant behind a handle), ``rollout_host`` (the controller's deployment and each replica's
sync task), ``metrics`` (``ray.serve.metrics`` series), ``local`` (a private local Ray),
``service`` (the Ray side of ``kdgate serve``: start, deploy, bounded stop).
"""
